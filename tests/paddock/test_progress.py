"""What a person reads in the terminal keeps the brackets users and submissions write."""

from __future__ import annotations

from rich.console import Console

from paddock.progress import render
from paddock.timeline import StageSummary, StatusReport


def test_reasons_and_names_are_plain_text_not_markup() -> None:
    report = StatusReport(
        id="abc",
        name="m[bold]",
        source="org/m",
        revision=None,
        status="failed",
        reason="wrote to me at [email]",
        failed_stage="sanity",
        endpoint=None,
        stages=[StageSummary("sanity", "rejected", 1.0, 1, "shape [128, 256] vs [256, 128]")],
    )
    console = Console(record=True, width=200)
    console.print(render(report))
    text = console.export_text()
    assert "m[bold]" in text and "[email]" in text and "shape [128, 256] vs [256, 128]" in text
