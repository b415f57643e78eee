"""One stress run, three renderings — terminal, markdown, JSON — using the same keys.

The keys are `StressMetrics`' field names everywhere (terminal column headers are only
their labels), so a figure in the UI, the database and a saved JSON file is one figure.
The *headline* is the gated step at the highest concurrency: the load the SLO was held
to, which `paddock status` shows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.table import Table

from paddock.stress.metrics import StressMetrics
from paddock.stress.slo import Slo, gated_steps

__all__ = ["COLUMNS", "headline", "to_json", "table_rows", "rich_table", "to_markdown"]

# (key, label, format) for the latency-vs-concurrency tables.
COLUMNS: list[tuple[str, str, str]] = [
    ("concurrency", "conc", "{}"),
    ("request_rate", "rate req/s", "{}"),
    ("completed", "ok", "{}"),
    ("failed", "failed", "{}"),
    ("timed_out", "timed out", "{}"),
    ("request_throughput", "req/s", "{:.2f}"),
    ("output_throughput", "out tok/s", "{:.1f}"),
    ("median_ttft_ms", "TTFT p50 ms", "{:.1f}"),
    ("p99_ttft_ms", "TTFT p99 ms", "{:.1f}"),
    ("median_tpot_ms", "TPOT p50 ms", "{:.1f}"),
    ("p99_tpot_ms", "TPOT p99 ms", "{:.1f}"),
    ("median_itl_ms", "ITL p50 ms", "{:.1f}"),
    ("median_e2el_ms", "E2EL p50 ms", "{:.0f}"),
    ("p99_e2el_ms", "E2EL p99 ms", "{:.0f}"),
    ("median_words_per_minute", "words/min p50", "{:.0f}"),
    ("error_rate", "errors", "{:.1%}"),
    ("good_fraction", "good", "{:.1%}"),
    ("settled", "settled", "{}"),
    ("requests_to_verdict", "n to verdict", "{}"),
]


def _fmt(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    return fmt.format(value)


def headline(steps: Sequence[StressMetrics], slo: Slo | None = None) -> StressMetrics | None:
    """The gated step with the highest concurrency (the last step when ungated)."""
    if not steps:
        return None
    chosen = gated_steps(steps, slo) if slo is not None else list(steps)
    return max(chosen, key=lambda s: s.concurrency or 0) if chosen else steps[-1]


def to_json(
    steps: Sequence[StressMetrics],
    *,
    slo: Slo | None = None,
    failures: Sequence[str] = (),
    **meta: Any,
) -> dict[str, Any]:
    """The stored form (``StressRun.metrics``): the headline's figures at the top level,
    every step under ``steps``, the verdict and whatever ``meta`` the caller adds."""
    head = headline(steps, slo)
    return {
        **(head.to_dict() if head else {}),
        **meta,
        "passed": not failures,
        "failures": list(failures),
        "slo": slo.model_dump() if slo is not None else None,
        "steps": [s.to_dict() for s in steps],
    }


def table_rows(steps: Sequence[StressMetrics]) -> list[dict[str, Any]]:
    """Rows for a Prefect table artifact: one per step, the COLUMNS keys, rounded."""
    rows = []
    for s in steps:
        d = s.to_dict()
        rows.append(
            {k: (round(d[k], 3) if isinstance(d[k], float) else d[k]) for k, _, _ in COLUMNS}
        )
    return rows


def rich_table(steps: Sequence[StressMetrics], *, title: str = "stress test") -> Table:
    """Latency vs concurrency for the terminal."""
    table = Table(title=title)
    for _, label, _ in COLUMNS:
        table.add_column(label, justify="right")
    for s in steps:
        d = s.to_dict()
        table.add_row(*(_fmt(d[k], f) for k, _, f in COLUMNS))
    return table


def to_markdown(
    steps: Sequence[StressMetrics],
    *,
    endpoint: str,
    model: str,
    profile: dict[str, Any],
    slo: Slo | None = None,
    failures: Sequence[str] = (),
) -> str:
    """The markdown artifact: verdict, latency-vs-concurrency table, headline figures."""
    verdict = "**PASSED**" if not failures else "**FAILED**"
    lines = [
        f"# Stress test: {model}",
        "",
        f"Endpoint `{endpoint}` · profile `{profile.get('kind')}` · SLO gate: {verdict}",
        "",
    ]
    if failures:
        lines += ["## What missed", ""] + [f"- {f}" for f in failures] + [""]
    lines += ["## Latency vs concurrency", ""]
    lines.append("| " + " | ".join(label for _, label, _ in COLUMNS) + " |")
    lines.append("|" + "---:|" * len(COLUMNS))
    for s in steps:
        d = s.to_dict()
        lines.append("| " + " | ".join(_fmt(d[k], f) for k, _, f in COLUMNS) + " |")
    head = headline(steps, slo)
    if head is not None:
        lines += [
            "",
            f"## Headline (concurrency {head.concurrency})",
            "",
            "| key | value |",
            "|---|---:|",
        ]
        for k, v in head.to_dict().items():
            lines.append(f"| `{k}` | {_fmt(v, '{:.3f}' if isinstance(v, float) else '{}')} |")
    lines += [
        "",
        "Definitions as `vllm bench serve` (TTFT, TPOT = (E2EL − TTFT)/(tokens − 1), "
        "ITL = gaps between chunks, E2EL); words per minute per stream over the time "
        "after the first token.",
        "",
    ]
    if any(s.settled is not None for s in steps):
        lines += [
            "Settled: the sequential gate's verdict once it was certain at the profile's "
            "confidence (`cap`: the step ran to its cap); n to verdict: requests sent by then.",
            "",
        ]
    lines += [
        "<details><summary>profile</summary>",
        "",
        "```json",
        _json(profile),
        "```",
        "</details>",
        "",
    ]
    return "\n".join(lines)


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)
