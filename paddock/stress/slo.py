"""Service-level objectives and the gate that holds a deployment to them.

Two kinds of threshold, as in vLLM: aggregate limits on the run's distribution (median
TTFT/TPOT, p99 E2EL, median words per minute per stream, error rate) and per-request limits
that define *goodput* (the requests that met every one of them), with a minimum fraction
of good requests. Every threshold is optional (None switches it off), so an operator can
override one figure without restating the rest.

A sweep is gated at every step up to ``at_concurrency`` (all steps when None): a model
must meet its SLO at the load it is meant to carry, not at the load the sweep probes past it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from paddock.errors import ProfileError, explain_validation
from paddock.stress.metrics import StressMetrics

__all__ = ["Slo", "CPU_SLO", "GPU_SLO", "SLOS", "slo_for", "evaluate", "gated_steps"]


class Slo(BaseModel):
    """Thresholds a run must meet; None disables one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ttft_p50_ms: float | None = Field(default=None, gt=0)
    tpot_p50_ms: float | None = Field(default=None, gt=0)
    e2el_p99_ms: float | None = Field(default=None, gt=0)
    min_words_per_minute: float | None = Field(default=None, ge=0, description="median/stream")
    max_error_rate: float = Field(default=0.0, ge=0, le=1)
    # Per-request limits for goodput, and the share of all requests that must meet them.
    goodput_ttft_ms: float | None = Field(default=None, gt=0)
    goodput_tpot_ms: float | None = Field(default=None, gt=0)
    goodput_e2el_ms: float | None = Field(default=None, gt=0)
    min_good_fraction: float | None = Field(default=None, ge=0, le=1)
    at_concurrency: int | None = Field(default=None, gt=0)


# From the measured CPU baseline (SmolLM2-135M, float32, 2 cores, vllm bench serve): conc 1
# TTFT p50 165 ms, TPOT p50 82 ms; conc 4 TTFT p50 506 ms, TPOT p50 112 ms. About 4x headroom
# on the conc-4 figures, so a tiny model on a busy CI box passes; a hung or crashing server
# still fails on errors, timeouts and goodput.
CPU_SLO = Slo(
    ttft_p50_ms=2000,
    tpot_p50_ms=500,
    e2el_p99_ms=30_000,
    min_words_per_minute=20,
    max_error_rate=0.05,
    goodput_ttft_ms=5000,
    goodput_e2el_ms=30_000,
    min_good_fraction=0.8,
)

# The seeds: first token within 150 ms and at least 250 words per minute per stream at the
# target concurrency; Chai's stress check treated ~20 s as a timeout.
GPU_SLO = Slo(
    ttft_p50_ms=150,
    e2el_p99_ms=20_000,
    min_words_per_minute=250,
    max_error_rate=0.01,
    goodput_ttft_ms=500,
    goodput_e2el_ms=20_000,
    min_good_fraction=0.95,
    at_concurrency=16,
)

SLOS: dict[str, Slo] = {"cpu": CPU_SLO, "gpu": GPU_SLO}


def slo_for(profile: str, overrides: dict[str, Any] | None = None) -> Slo:
    """The named SLO ("cpu" or "gpu") with ``overrides`` applied; a bad name or value
    raises `ProfileError` (a ValueError) before anything is measured."""
    if profile not in SLOS:
        raise ProfileError(f"unknown SLO profile {profile!r}; known: {sorted(SLOS)}")
    base = SLOS[profile]
    if not overrides:
        return base
    try:
        return Slo(**{**base.model_dump(), **overrides})
    except ValidationError as exc:
        raise ProfileError(explain_validation(exc, what="SLO override")) from exc


def gated_steps(steps: Sequence[StressMetrics], slo: Slo) -> list[StressMetrics]:
    """The steps the gate looks at: those at or below ``slo.at_concurrency``."""
    if slo.at_concurrency is None:
        return list(steps)
    chosen = [s for s in steps if s.concurrency is None or s.concurrency <= slo.at_concurrency]
    return chosen or list(steps[:1])


def evaluate(metrics: StressMetrics | Sequence[StressMetrics], slo: Slo) -> list[str]:
    """Human-readable failures, each with the figure that missed; empty when passing."""
    steps = [metrics] if isinstance(metrics, StressMetrics) else list(metrics)
    failures: list[str] = []
    for m in gated_steps(steps, slo):
        where = "" if len(steps) == 1 else f"at concurrency {m.concurrency}: "
        failures.extend(where + f for f in _evaluate_one(m, slo))
    return failures


def _evaluate_one(m: StressMetrics, slo: Slo) -> list[str]:
    out: list[str] = []
    if m.total_requests == 0:
        return ["no requests were measured"]
    if m.completed == 0:
        return [f"no request completed ({m.failed} failed, {m.timed_out} timed out)"]
    if m.error_rate > slo.max_error_rate:
        out.append(
            f"error rate {m.error_rate:.1%} > {slo.max_error_rate:.1%} "
            f"({m.failed} failed, {m.timed_out} timed out of {m.total_requests})"
        )
    if slo.ttft_p50_ms is not None and m.median_ttft_ms > slo.ttft_p50_ms:
        out.append(f"median TTFT {m.median_ttft_ms:.0f} ms > {slo.ttft_p50_ms:.0f} ms")
    if slo.tpot_p50_ms is not None and m.median_tpot_ms > slo.tpot_p50_ms:
        out.append(f"median TPOT {m.median_tpot_ms:.1f} ms > {slo.tpot_p50_ms:.1f} ms")
    if slo.e2el_p99_ms is not None and m.p99_e2el_ms > slo.e2el_p99_ms:
        out.append(f"p99 end-to-end latency {m.p99_e2el_ms:.0f} ms > {slo.e2el_p99_ms:.0f} ms")
    if (
        slo.min_words_per_minute is not None
        and m.median_words_per_minute < slo.min_words_per_minute
    ):
        out.append(
            f"median words per minute per stream {m.median_words_per_minute:.0f} "
            f"< {slo.min_words_per_minute:.0f}"
        )
    if (
        slo.min_good_fraction is not None
        and m.good_fraction is not None
        and m.good_fraction < slo.min_good_fraction
    ):
        out.append(
            f"goodput: {m.good_fraction:.1%} of requests met the per-request SLO "
            f"< {slo.min_good_fraction:.1%} ({m.goodput:.2f} req/s)"
        )
    return out
