"""The metric definitions, on hand-made records (vLLM's `bench serve` definitions)."""

from __future__ import annotations

import numpy as np
import pytest

from paddock.stress.metrics import calculate_metrics
from paddock.stress.results import RequestResult
from paddock.stress.slo import Slo


def ok(
    ttft: float, itl: list[float], tokens: int, text: str = "", prompt: int = 10
) -> RequestResult:
    return RequestResult(
        success=True,
        ttft=ttft,
        itl=itl,
        latency=ttft + sum(itl),
        output_tokens=tokens,
        prompt_tokens=prompt,
        text=text,
    )


def test_tpot_itl_e2el_follow_vllm() -> None:
    # 5 tokens in 3 chunks: TPOT uses the token count, ITL the chunk gaps.
    r = ok(0.1, [0.2, 0.3], tokens=5, text="one two three four")
    m = calculate_metrics([r], duration_s=2.0)
    assert m.completed == 1 and m.failed == 0 and m.timed_out == 0
    assert m.median_ttft_ms == pytest.approx(100)
    assert m.median_e2el_ms == pytest.approx(600)
    assert m.median_tpot_ms == pytest.approx((0.6 - 0.1) / (5 - 1) * 1000)
    assert m.mean_itl_ms == pytest.approx(250)
    assert m.request_throughput == pytest.approx(0.5)
    assert m.output_throughput == pytest.approx(2.5)
    assert m.total_input_tokens == 10 and m.total_output_tokens == 5
    # 4 words over the 0.5 s after the first token
    assert m.median_words_per_minute == pytest.approx(4 * 60 / 0.5)


def test_one_token_output_has_no_tpot() -> None:
    m = calculate_metrics([ok(0.05, [], tokens=1)], duration_s=1.0)
    assert m.median_tpot_ms == 0.0 and m.median_words_per_minute == 0.0
    assert m.median_ttft_ms == pytest.approx(50)


def test_percentiles_use_numpys_linear_method() -> None:
    ttfts = [i / 1000 for i in range(1, 101)]
    m = calculate_metrics([ok(t, [0.01], tokens=2) for t in ttfts], duration_s=10)
    arr = np.array(ttfts) * 1000
    assert m.p90_ttft_ms == pytest.approx(np.percentile(arr, 90))
    assert m.p99_ttft_ms == pytest.approx(np.percentile(arr, 99))
    assert m.mean_ttft_ms == pytest.approx(arr.mean())
    assert m.median_ttft_ms == pytest.approx(50.5)


def test_empty_and_zero_duration_are_guarded() -> None:
    m = calculate_metrics([], duration_s=0.0)
    assert m.total_requests == 0 and m.completed == 0
    assert m.request_throughput == 0.0 and m.error_rate == 0.0
    assert m.median_ttft_ms == 0.0 and m.p99_e2el_ms == 0.0
    assert m.goodput is None


def test_failures_timeouts_and_error_rate() -> None:
    results = [
        ok(0.1, [0.1], tokens=2),
        RequestResult(error="HTTP 500: boom"),
        RequestResult(error="timed out after 1 s", timed_out=True),
        ok(0.1, [0.1], tokens=2),
    ]
    m = calculate_metrics(results, duration_s=1.0)
    assert (m.completed, m.failed, m.timed_out) == (2, 1, 1)
    assert m.error_rate == pytest.approx(0.5)
    assert m.timeout_rate == pytest.approx(0.25)


def test_missing_usage_counts_chunks() -> None:
    r = ok(0.1, [0.1, 0.1], tokens=0)
    m = calculate_metrics([r], duration_s=1.0)
    assert m.total_output_tokens == 3
    assert m.median_tpot_ms == pytest.approx(100)


def test_goodput_counts_requests_meeting_every_limit() -> None:
    slo = Slo(goodput_ttft_ms=200, goodput_tpot_ms=50)
    results = [
        ok(0.1, [0.04], tokens=2),  # good
        ok(0.3, [0.04], tokens=2),  # TTFT too slow
        ok(0.1, [0.06], tokens=2),  # TPOT too slow
        ok(0.1, [], tokens=1),  # one token: TPOT counts as 0 → good
        RequestResult(error="x"),
    ]
    m = calculate_metrics(results, duration_s=2.0, slo=slo)
    assert m.goodput == pytest.approx(2 / 2.0)
    assert m.good_fraction == pytest.approx(2 / 5)
