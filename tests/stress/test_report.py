"""Reports: the same keys in the terminal table, the markdown and the JSON."""

from __future__ import annotations

import io

from rich.console import Console

from paddock.stress.metrics import StressMetrics, calculate_metrics
from paddock.stress.report import COLUMNS, headline, rich_table, table_rows, to_json, to_markdown
from paddock.stress.results import RequestResult
from paddock.stress.slo import Slo


def step(conc: int, ttft: float) -> StressMetrics:
    r = RequestResult(
        success=True,
        ttft=ttft,
        itl=[0.01] * 4,
        latency=ttft + 0.04,
        output_tokens=5,
        text="a b c d e",
    )
    return calculate_metrics([r, r], 1.0, concurrency=conc)


def test_json_markdown_and_table_agree() -> None:
    steps = [step(1, 0.1), step(4, 0.2), step(16, 0.9)]
    slo = Slo(ttft_p50_ms=500, at_concurrency=4)
    data = to_json(steps, slo=slo, failures=[], endpoint="http://x", model="m")
    assert data["concurrency"] == 4  # the headline is the top gated step
    assert data["median_ttft_ms"] == steps[1].median_ttft_ms
    assert [s["concurrency"] for s in data["steps"]] == [1, 4, 16]
    assert set(StressMetrics.from_dict(data).to_dict()) == set(steps[0].to_dict())
    assert data["passed"] is True and data["model"] == "m"
    rows = table_rows(steps)
    assert list(rows[0]) == [k for k, _, _ in COLUMNS]
    md = to_markdown(
        steps,
        endpoint="http://x",
        model="m",
        profile={"kind": "sweep"},
        slo=slo,
        failures=["median TTFT 900 ms > 500 ms"],
    )
    assert "## Latency vs concurrency" in md and "**FAILED**" in md
    assert md.count("\n| 16 |") == 1 and "- median TTFT 900 ms > 500 ms" in md
    out = io.StringIO()
    Console(file=out, width=250).print(rich_table(steps))
    assert "TTFT p50 ms" in out.getvalue()
    assert headline([]) is None
