"""`paddock`: submit a model, watch it, stop it.

A thin layer over the same functions the API uses; `--json` prints exactly the API's shape.
"""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from paddock import crud, lifecycle, timeline
from paddock.errors import PaddockError
from paddock.models import Status
from paddock.params import parse_params, validate_params
from paddock.progress import artifacts_table, render, stress_table, watch
from paddock.runner import flow_log_path, log_path, spawn_flow

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
out = Console()
err = Console(stderr=True)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@app.command()
def submit(
    source: Annotated[str, typer.Argument(help="hub id (org/name), s3://bucket/dir, or a path")],
    revision: Annotated[str | None, typer.Option(help="branch, tag or commit")] = None,
    name: Annotated[str | None, typer.Option(help="display name (default: from source)")] = None,
    developer: Annotated[str, typer.Option(help="who submits")] = getpass.getuser(),
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="k=v")] = None,
    wait: Annotated[bool, typer.Option(help="run the flow now and wait for its end")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Submit a model; prints its id (with --wait, exits 0 only once it is deployed)."""
    try:
        params = validate_params(parse_params(param or []))
    except PaddockError as exc:
        _fail(str(exc))
    display = name or source.rstrip("/").rsplit("/", 1)[-1] or source
    sub = crud.create_submission(
        developer=developer,
        source=source,
        display_name=display,
        requested_revision=revision,
        generation_params=params,
    )
    proc = spawn_flow(sub.id, detach=not wait)
    if not wait:
        if as_json:
            _print_json(
                {"id": sub.id, "status": str(sub.status), "log": str(flow_log_path(sub.id))}
            )
        else:
            out.print(sub.id)
        return
    err.print(f"submission [bold]{sub.id}[/]: {source} (log: {flow_log_path(sub.id)})")
    _follow(proc, sub.id, as_json=as_json)


def _follow(proc: subprocess.Popen[bytes], submission_id: str, *, as_json: bool) -> None:
    """Show progress until the flow process ends; exit 1 unless the model is deployed."""
    watch(submission_id, alive=lambda: proc.poll() is None, console=err)
    proc.wait()
    report = timeline.build(submission_id)
    if as_json:
        _print_json(report.as_dict())
    else:
        out.print(render(report))
    if report.status != Status.deployed:
        raise typer.Exit(1)


@app.command()
def status(
    submission_id: Annotated[str | None, typer.Argument()] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show a submission's stages, timings, artifacts and endpoint (default: the newest)."""
    if submission_id is None:
        latest = crud.list_submissions(limit=1)
        if not latest:
            _fail("no submissions yet")
        submission_id = latest[0].id
    try:
        report = timeline.build(submission_id)
    except PaddockError as exc:
        _fail(str(exc))
    if as_json:
        _print_json(report.as_dict())
        return
    out.print(render(report))
    if report.artifacts:
        out.print(artifacts_table(report.artifacts))
    if report.stress:
        out.print(stress_table(report.stress))


@app.command(name="list")
def list_(
    developer: Annotated[str | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List submissions, newest first."""
    subs = crud.list_submissions(developer=developer)
    if as_json:
        _print_json([s.model_dump(exclude={"reference"}) for s in subs])
        return
    table = Table("id", "name", "developer", "status", "endpoint", "created")
    for s in subs:
        table.add_row(
            s.id,
            s.display_name,
            s.developer,
            str(s.status),
            s.endpoint or "",
            s.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    out.print(table)


@app.command()
def run(submission_id: str) -> None:
    """Run (or resume) a submission's flow and follow it; finished stages are skipped."""
    if crud.get_submission(submission_id=submission_id) is None:
        _fail(f"no submission {submission_id!r}; `paddock list` shows yours")
    _follow(spawn_flow(submission_id, detach=False), submission_id, as_json=False)


@app.command()
def stress(
    submission_id: str,
    profile: Annotated[str, typer.Option(help="preset: smoke, cpu, gpu")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Stress-test a deployed model again (a `stress` flow run with its artifacts)."""
    from paddock.runner import spawn_module

    sub = crud.get_submission(submission_id=submission_id)
    if sub is None or sub.status != Status.deployed or not sub.endpoint:
        _fail(f"{submission_id} is not deployed; only a live model can be stress-tested")
    before = crud.latest_stress_run(submission_id=submission_id)
    log_name = f"{submission_id}.stress.log"
    code = spawn_module(
        "flows.stress", sub.endpoint, sub.display_name, profile, submission_id, log_name=log_name
    ).wait()
    run_ = crud.latest_stress_run(submission_id=submission_id)
    if run_ is None or (before is not None and run_.id == before.id):
        _fail(f"the stress run did not finish (exit {code}); see {log_path(log_name)}")
    headline = timeline.build(submission_id).stress or {}
    if as_json:
        _print_json(run_.metrics)
    else:
        out.print(stress_table(headline))
    if not run_.passed:
        raise typer.Exit(1)


def _stop(submission_id: str, new: Status) -> None:
    from paddock.serving import stop_serving

    try:
        sub = crud.require_submission(submission_id=submission_id)
        stopped = stop_serving(submission_id)
        if sub.status != new:
            lifecycle.transition(submission_id, new)
    except PaddockError as exc:
        _fail(str(exc))
    out.print(f"{submission_id}: {new}" + (" (server stopped)" if stopped else ""))


@app.command()
def deactivate(submission_id: str) -> None:
    """Stop sending users to a model and stop its server (it can be redeployed)."""
    _stop(submission_id, Status.inactive)


@app.command()
def teardown(submission_id: str) -> None:
    """Stop a model's server for good."""
    _stop(submission_id, Status.torndown)


if __name__ == "__main__":
    app()
