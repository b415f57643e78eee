"""Latency and throughput figures, with vLLM ``bench serve``'s definitions so they compare.

One flat dataclass (units in the names) and one pure function, as in
``vllm/benchmarks/serve.py``:

- TTFT: send -> first streamed chunk carrying a choice.
- TPOT: (E2EL - TTFT) / (output tokens - 1), only for requests with more than one token.
- ITL: every gap between successive streamed chunks, pooled over requests.
- E2EL: send -> last chunk carrying a choice.
- request/output throughput: completed requests and output tokens per second of the run.
- goodput: completed requests per second meeting every per-request SLO (vLLM's
  ``--goodput ttft:MS tpot:MS e2el:MS``; TPOT counts as 0 for one-token outputs).

paddock adds words per minute per stream (the seeds' reading-speed target): whitespace
separated words of a response over its streaming time after the first token, for requests
with more than one chunk — TTFT is gated on its own. Percentiles use numpy's default
(linear) method, as vLLM does; an empty list yields 0.0 rather than an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from paddock.stress.results import RequestResult

if TYPE_CHECKING:
    from paddock.stress.slo import Slo

__all__ = ["StressMetrics", "calculate_metrics", "STATS", "SERIES"]

STATS = ("mean", "median", "p90", "p99")
SERIES = ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms", "words_per_minute")


@dataclass(slots=True)
class StressMetrics:
    """Figures for one measured run (one step of a sweep)."""

    concurrency: int | None  # None: unbounded (a rate run without a cap)
    request_rate: float | None  # None: as fast as the concurrency allows
    total_requests: int
    completed: int
    failed: int  # errors other than timeouts
    timed_out: int  # request timeouts plus requests cut at the run's bound
    duration_s: float
    total_input_tokens: int
    total_output_tokens: int
    request_throughput: float  # completed requests per second
    output_throughput: float  # output tokens per second
    error_rate: float  # (failed + timed_out) / total_requests
    timeout_rate: float
    goodput: float | None  # good requests per second; None without goodput thresholds
    good_fraction: float | None  # good requests / total_requests
    mean_ttft_ms: float
    median_ttft_ms: float
    p90_ttft_ms: float
    p99_ttft_ms: float
    mean_tpot_ms: float
    median_tpot_ms: float
    p90_tpot_ms: float
    p99_tpot_ms: float
    mean_itl_ms: float
    median_itl_ms: float
    p90_itl_ms: float
    p99_itl_ms: float
    mean_e2el_ms: float
    median_e2el_ms: float
    p90_e2el_ms: float
    p99_e2el_ms: float
    mean_words_per_minute: float
    median_words_per_minute: float
    p90_words_per_minute: float
    p99_words_per_minute: float
    # The sequential gate (`paddock.stress.sequential`), on gated steps when the profile
    # has one: "pass"/"fail" when the verdict settled early, "cap" when the step ran to its
    # cap; and the requests sent when it settled (all of them at the cap).
    settled: str | None = None
    requests_to_verdict: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StressMetrics:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _stats(values: Sequence[float], scale: float) -> dict[str, float]:
    arr = np.asarray(values if len(values) else [0.0], dtype=float) * scale
    return {
        "mean": float(np.mean(arr)),
        "median": float(np.median(arr)),
        "p90": float(np.percentile(arr, 90)),
        "p99": float(np.percentile(arr, 99)),
    }


def calculate_metrics(
    results: Sequence[RequestResult],
    duration_s: float,
    slo: Slo | None = None,
    *,
    concurrency: int | None = None,
    request_rate: float | None = None,
) -> StressMetrics:
    """Compute every figure for one run; pure, and safe on empty input or zero duration."""
    ttfts: list[float] = []
    tpots: list[float] = []
    all_tpots: list[float] = []  # with 0 for one-token outputs, for goodput (as vLLM)
    itls: list[float] = []
    e2els: list[float] = []
    wpms: list[float] = []
    total_in = total_out = completed = failed = timed_out = 0
    for r in results:
        if not r.success:
            if r.timed_out:
                timed_out += 1
            else:
                failed += 1
            continue
        completed += 1
        # Without a usage chunk, count content chunks: the best the stream tells us.
        out_len = r.output_tokens or (len(r.itl) + 1)
        total_out += out_len
        total_in += r.prompt_tokens
        tpot = 0.0
        if out_len > 1:
            tpot = (r.latency - r.ttft) / (out_len - 1)
            tpots.append(tpot)
        all_tpots.append(tpot)
        itls.extend(r.itl)
        ttfts.append(r.ttft)
        e2els.append(r.latency)
        decode_s = r.latency - r.ttft
        if r.itl and decode_s > 0:
            wpms.append(len(r.text.split()) * 60.0 / decode_s)

    good: int | None = None
    limits = _goodput_limits(slo)
    if limits:
        good = 0
        for ttft, tpot, e2el in zip(ttfts, all_tpots, e2els, strict=True):
            got = {"ttft": ttft, "tpot": tpot, "e2el": e2el}
            if all(got[k] <= lim for k, lim in limits.items()):
                good += 1

    total = len(results)
    dur = duration_s if duration_s > 0 else float("inf")  # rates are 0, not a ZeroDivision
    values: dict[str, Any] = dict(
        concurrency=concurrency,
        request_rate=request_rate,
        total_requests=total,
        completed=completed,
        failed=failed,
        timed_out=timed_out,
        duration_s=max(duration_s, 0.0),
        total_input_tokens=total_in,
        total_output_tokens=total_out,
        request_throughput=completed / dur,
        output_throughput=total_out / dur,
        error_rate=(failed + timed_out) / total if total else 0.0,
        timeout_rate=timed_out / total if total else 0.0,
        goodput=None if good is None else good / dur,
        good_fraction=None if good is None else (good / total if total else 0.0),
    )
    for name, series, scale in (
        ("ttft_ms", ttfts, 1000.0),
        ("tpot_ms", tpots, 1000.0),
        ("itl_ms", itls, 1000.0),
        ("e2el_ms", e2els, 1000.0),
        ("words_per_minute", wpms, 1.0),
    ):
        for stat, value in _stats(series, scale).items():
            values[f"{stat}_{name}"] = value
    return StressMetrics(**values)


def _goodput_limits(slo: Slo | None) -> dict[str, float]:
    """Per-request limits in seconds, keyed as vLLM's ``--goodput`` names."""
    if slo is None:
        return {}
    pairs = {
        "ttft": slo.goodput_ttft_ms,
        "tpot": slo.goodput_tpot_ms,
        "e2el": slo.goodput_e2el_ms,
    }
    return {k: v / 1000.0 for k, v in pairs.items() if v is not None}
