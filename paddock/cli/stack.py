"""Platform commands: `paddock up`, `paddock down` and `paddock sla`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from paddock.cli import api_mode, app, err, fail, out, print_json


@app.command()
def up(
    redeploy: Annotated[
        bool,
        typer.Option(help="register deployments and automations again, even if all is running"),
    ] = False,
) -> None:
    """Start the platform here: Prefect server, worker, deployments, automations, API."""
    from paddock import stack

    report = stack.up(
        redeploy=redeploy, progress=lambda msg: err.print(f"… {msg}", highlight=False)
    )
    table = Table(title="paddock stack")
    for column in ("part", "where", "pid", "log", ""):
        table.add_column(column, overflow="fold")  # a path cut short is no use
    for row in report.rows:
        state = "[green]started[/]" if row.state == "started" else "already running"
        table.add_row(row.part, row.where, str(row.pid), row.log, state)
    out.print(table)
    if not report.started:
        out.print("every part was already running; nothing started", highlight=False)
    if report.deployments:
        out.print(f"deployments: {', '.join(report.deployments)}", highlight=False)
    if report.automations:
        out.print(f"automations: {', '.join(report.automations)}", highlight=False)
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    urls = stack.urls()
    out.print(
        f"ready in {report.seconds:.1f} s. Runs go through the deployment where "
        f"PREFECT_API_URL={urls.prefect_api} is set; developers use PADDOCK_API_URL={urls.api}",
        highlight=False,
    )


@app.command()
def down() -> None:
    """Stop every part `paddock up` started (and the runs under way)."""
    from paddock import stack

    stopped = stack.down()
    if stopped:
        out.print(f"stopped: {', '.join(stopped)}", highlight=False)
    else:
        out.print("nothing was running", highlight=False)


@app.command()
def sla(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """SLA met and breached counts, and the stages where the time goes (on the database)."""
    from paddock import sla as clocks

    if api_mode():
        fail("`paddock sla` reads the database; unset PADDOCK_API_URL on the operator's machine")
    summary = clocks.summary()
    if as_json:
        print_json(summary.as_dict())
        return
    counts = Table("met", "breached", "late", "on time", title=f"SLA {summary.sla_seconds} s")
    counts.add_row(str(summary.met), str(summary.breached), str(summary.late), str(summary.on_time))
    out.print(counts)
    stages = Table("stage", "submissions", "mean s", "max s", "breached in", title="slowest stages")
    for s in summary.slowest_stages:
        stages.add_row(
            s.stage,
            str(s.submissions),
            f"{s.mean_seconds:.1f}",
            f"{s.max_seconds:.1f}",
            str(summary.breach_stages.get(s.stage, 0)),
        )
    out.print(stages)
