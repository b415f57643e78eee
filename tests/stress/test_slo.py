"""The SLO gate: presets, overrides and the failure messages."""

from __future__ import annotations

import pytest

from paddock.errors import ProfileError
from paddock.stress.metrics import StressMetrics, calculate_metrics
from paddock.stress.results import RequestResult
from paddock.stress.slo import CPU_SLO, GPU_SLO, Slo, evaluate, slo_for


def run(
    ttft: float,
    gap: float,
    tokens: int = 10,
    n: int = 20,
    errors: int = 0,
    conc: int | None = 1,
    slo: Slo | None = None,
) -> StressMetrics:
    rs = [
        RequestResult(
            success=True,
            ttft=ttft,
            itl=[gap] * (tokens - 1),
            latency=ttft + gap * (tokens - 1),
            output_tokens=tokens,
            text=" ".join(["word"] * tokens),
        )
        for _ in range(n)
    ] + [RequestResult(error="HTTP 500") for _ in range(errors)]
    return calculate_metrics(rs, 10.0, slo, concurrency=conc)


def test_cpu_baseline_passes_cpu_slo() -> None:
    # The measured SmolLM2 baseline at concurrency 4: TTFT 506 ms, TPOT 112 ms.
    assert evaluate(run(0.506, 0.112, tokens=32, slo=CPU_SLO), CPU_SLO) == []


def test_hung_server_fails_with_the_figures() -> None:
    m = run(3.0, 0.9, tokens=32, errors=10, slo=CPU_SLO)
    failures = evaluate(m, CPU_SLO)
    text = "\n".join(failures)
    assert "error rate 33.3% > 5.0%" in text
    assert "median TTFT 3000 ms > 2000 ms" in text
    assert "median TPOT 900.0 ms > 500.0 ms" in text
    assert "goodput" in text


def test_gpu_slo_seeds() -> None:
    assert GPU_SLO.ttft_p50_ms == 150 and GPU_SLO.min_words_per_minute == 250
    fast = run(0.08, 0.02, tokens=50, slo=GPU_SLO)
    assert evaluate(fast, GPU_SLO) == []
    slow = run(0.4, 0.5, tokens=50, slo=GPU_SLO)  # 50 words in 24.5 s
    text = "\n".join(evaluate(slow, GPU_SLO))
    assert "median TTFT 400 ms > 150 ms" in text
    assert "median words per minute per stream 122 < 250" in text


def test_nothing_completed() -> None:
    m = calculate_metrics([RequestResult(error="x"), RequestResult(timed_out=True)], 1.0)
    assert evaluate(m, CPU_SLO) == ["no request completed (1 failed, 1 timed out)"]
    assert evaluate(calculate_metrics([], 1.0), CPU_SLO) == ["no requests were measured"]


def test_sweep_gated_up_to_target_concurrency() -> None:
    slo = Slo(ttft_p50_ms=150, at_concurrency=4)
    steps = [run(0.1, 0.01, conc=1), run(0.12, 0.01, conc=4), run(0.9, 0.01, conc=16)]
    assert evaluate(steps, slo) == []
    failures = evaluate(steps, Slo(ttft_p50_ms=150))
    assert failures == ["at concurrency 16: median TTFT 900 ms > 150 ms"]


def test_slo_for_overrides_and_errors() -> None:
    assert slo_for("cpu") == CPU_SLO
    assert slo_for("gpu", {"ttft_p50_ms": 300}).ttft_p50_ms == 300
    assert slo_for("gpu", {"ttft_p50_ms": None}).ttft_p50_ms is None
    with pytest.raises(ProfileError, match="unknown SLO profile 'tpu'"):
        slo_for("tpu")
    with pytest.raises(ProfileError, match="ttft_p50_ms"):
        slo_for("cpu", {"ttft_p50_ms": -5})
    with pytest.raises(ProfileError, match="bogus"):
        slo_for("cpu", {"bogus": 1})
