"""Watching a submission move: a live table on a terminal, one line per change otherwise."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from paddock import timeline
from paddock.lifecycle import SETTLED
from paddock.sla import describe
from paddock.timeline import StatusReport

__all__ = ["render", "artifacts_table", "stress_table", "watch"]

_SETTLED = {str(s) for s in SETTLED}
_ICON = {
    "succeeded": "[green]✔[/]",
    "skipped": "[cyan]↷[/]",
    "running": "[yellow]…[/]",
    "failed": "[red]✘[/]",
    "rejected": "[red]✘[/]",
}


def render(report: StatusReport) -> Table:
    table = Table(
        title=f"{escape(report.name)} ({report.id}) — {report.status}",
        caption=(
            (
                describe(report.sla, str(report.status))
                if report.sla
                else f"{report.total_seconds:.1f} s of a {report.sla_seconds} s SLA"
            )
            + (f" · {report.endpoint}" if report.endpoint else "")
        ),
    )
    table.add_column("stage")
    table.add_column("", justify="center")
    table.add_column("seconds", justify="right")
    table.add_column("attempts", justify="right")
    table.add_column("note", overflow="fold", max_width=70)
    for s in report.stages:
        table.add_row(
            s.name,
            _ICON.get(s.status, s.status),
            f"{s.seconds:.1f}" if s.seconds is not None else "",
            str(s.attempts),
            # Reasons quote what the submission holds ("shape [128, 256]", "[email]"):
            # plain text, never rich markup.
            Text((s.detail or "")[:300]),
        )
    if report.reason and not any(s.detail and s.detail in report.reason for s in report.stages):
        table.add_row("reason", "", "", "", Text(report.reason[:600], style="red"))
    return table


def artifacts_table(artifacts: list[dict[str, Any]]) -> Table:
    base = artifacts[0]["uri"].rsplit("/", 1)[0] + "/"
    table = Table("file", "bytes", "sha256", title="stored artifacts", caption=base)
    for a in artifacts:
        table.add_row(a["uri"].rsplit("/", 1)[-1], f"{a['size']:,}", a["sha256"][:16] + "…")
    return table


def stress_table(stress: dict[str, Any]) -> Table:
    verdict = "[green]passed[/]" if stress.get("passed") else "[red]failed[/]"
    table = Table("figure", "value", title=f"stress test: {verdict}")
    for key, value in stress.items():
        if key in ("passed", "failures"):
            continue
        table.add_row(key, f"{value:,.1f}" if isinstance(value, float) else str(value))
    for failure in stress.get("failures") or []:
        table.add_row("[red]missed[/]", failure)
    return table


def watch(
    submission_id: str,
    *,
    alive: Callable[[], bool],
    console: Console | None = None,
    interval: float = 0.5,
) -> StatusReport:
    """Show progress until the submission settles or `alive()` turns false."""
    console = console or Console(stderr=True)
    report = timeline.build(submission_id)
    if console.is_terminal:
        with Live(render(report), console=console, refresh_per_second=4) as live:
            while report.status not in _SETTLED and alive():
                time.sleep(interval)
                report = timeline.build(submission_id)
                live.update(render(report))
            report = timeline.build(submission_id)
            live.update(render(report))
        return report
    seen: set[tuple[str, str]] = set()
    while True:
        for s in report.stages:
            if (s.name, s.status) not in seen:
                seen.add((s.name, s.status))
                took = f" in {s.seconds:.1f} s" if s.status != "running" else ""
                console.print(
                    f"[{report.id}] {s.name}: {s.status}{took}", highlight=False, markup=False
                )
        if report.status in _SETTLED or not alive():
            break
        time.sleep(interval)
        report = timeline.build(submission_id)
    return timeline.build(submission_id)
