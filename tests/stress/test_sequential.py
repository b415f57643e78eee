"""The sequential gate: its boundaries, and early verdicts against the fake server."""

from __future__ import annotations

import pytest

from paddock.stress.profiles import LoadProfile, load_profile
from paddock.stress.report import table_rows, to_json, to_markdown
from paddock.stress.results import RequestResult
from paddock.stress.runner import run_stress
from paddock.stress.sequential import (
    StepGate,
    _crossing,
    boundaries,
    checks_for,
    gate_for,
)
from paddock.stress.slo import CPU_SLO, Slo
from tests.stress.fakeserver import FakeServer

# Only the median TTFT can settle: the error-rate check is off (a limit of 100 %).
MEDIAN_ONLY = Slo(ttft_p50_ms=100, max_error_rate=1.0)


def profile(cap: int, **extra: object) -> LoadProfile:
    return load_profile(
        {
            "kind": "concurrent",
            "concurrency": 4,
            "num_requests": cap,
            "warmup_requests": 0,
            "max_tokens": 8,
            "request_timeout_s": 10,
            "max_duration_s": 60,
            "sequential": {"confidence": 0.95},
            **extra,
        }
    )


def ok(ttft: float) -> RequestResult:
    return RequestResult(success=True, ttft=ttft, latency=ttft + 0.01, itl=[0.01], text="a b")


# ---------------------------------------------------------------------- the statistics


@pytest.mark.parametrize("need", [0.5, 0.8, 0.95])
def test_calibrated_boundaries_keep_the_error_over_all_looks(need: float) -> None:
    alpha, cap = 0.01, 120
    pass_at, fail_at = boundaries(need, cap, alpha, cap)
    # A fraction exactly at the requirement crosses either boundary at some look with at
    # most alpha probability, although every n is looked at.
    assert _crossing(need, pass_at, "pass") <= alpha
    assert _crossing(need, fail_at, "fail") <= alpha
    # ... and the calibration is not needlessly strict: looking once would cross more.
    single_pass = boundaries(need, cap, alpha * 40, cap)[0]
    assert _crossing(need, single_pass, "pass") > alpha


def test_what_settles_how_soon() -> None:
    alpha = 0.05 / 4
    pass_at, fail_at = boundaries(0.5, 400, alpha, 400)
    first_pass = next(n for n in range(401) if pass_at[n] <= n)  # every request good
    first_fail = next(n for n in range(401) if fail_at[n] >= 0)  # every request bad
    assert 5 <= first_pass <= 12 and 5 <= first_fail <= 12
    # A p99 cannot pass on a few hundred requests; an error rate of 0 fails at the first.
    p99_pass, p99_fail = boundaries(0.99, 400, alpha, 400)
    assert all(p99_pass[n] > n for n in range(401)) and p99_fail[2] >= 0
    zero_pass, zero_fail = boundaries(1.0, 8, alpha, 8)
    assert all(zero_pass[n] > n for n in range(9)) and zero_fail[1] == 0


def test_checks_follow_the_slo() -> None:
    cpu = load_profile("cpu")
    names = [c.name for c in checks_for(CPU_SLO, cpu)]
    # The p99 E2EL limit equals the request timeout: every completed request meets it.
    assert names == [
        "ttft_p50_ms",
        "tpot_p50_ms",
        "min_words_per_minute",
        "max_error_rate",
        "min_good_fraction",
    ]
    tight = cpu.model_copy(update={"request_timeout_s": 60})
    assert "e2el_p99_ms" in [c.name for c in checks_for(CPU_SLO, tight)]
    assert gate_for(CPU_SLO, load_profile("smoke")) is None  # off unless the profile asks


def test_in_flight_requests_count_against_the_verdict() -> None:
    [check] = checks_for(MEDIAN_ONLY, profile(40))
    gate = StepGate([check], cap=40, alpha=0.01, looks=40)
    running = [RequestResult() for _ in range(10)]
    fast = [ok(0.01) for _ in range(10)]
    assert gate(fast) == "pass"
    assert gate(fast + running) == "pass"  # the ten sent first are all known
    # Ten fast ones that overtook ten sent before them: those may all be slow.
    assert gate(running + fast) is None
    slow = [ok(0.5) for _ in range(10)]
    assert gate(slow) == "fail"
    assert gate(running + slow) is None


# ---------------------------------------------------------------------- the fake server


def test_clearly_fast_server_passes_early() -> None:
    with FakeServer(tokens=8) as srv:
        out = run_stress(srv.url, "fake", profile(200), MEDIAN_ONLY)
    [step] = out.steps
    assert out.passed and step.settled == "pass"
    assert step.requests_to_verdict is not None and step.requests_to_verdict < 30
    # Stopping sends nothing new; what was in flight finished and is measured.
    assert step.total_requests == step.requests_to_verdict == step.completed


def test_clearly_fast_server_passes_the_cpu_slo_before_the_cap() -> None:
    """With an error-rate limit, a pass needs enough clean requests to bound it."""
    with FakeServer(tokens=8) as srv:
        out = run_stress(srv.url, "fake", profile(400), CPU_SLO)
    [step] = out.steps
    assert out.passed and step.settled == "pass"
    assert step.requests_to_verdict is not None and 100 < step.requests_to_verdict < 200


def test_clearly_slow_server_fails_early_and_ends_the_sweep() -> None:
    sweep = profile(200, kind="sweep", sweep_concurrencies=[4, 8], concurrency=None)
    with FakeServer(tokens=8, first_token_delay_s=0.3) as srv:
        out = run_stress(srv.url, "fake", sweep, MEDIAN_ONLY)
    assert not out.passed and len(out.steps) == 1  # the step at concurrency 8 never ran
    [step] = out.steps
    assert step.settled == "fail" and step.requests_to_verdict is not None
    assert step.requests_to_verdict <= 20
    assert any("median TTFT" in f for f in out.failures)


def test_borderline_server_runs_to_the_cap() -> None:
    # Half the requests well under the limit, half well over: the median sits on it.
    with FakeServer(tokens=8, first_token_delays=[0.0, 0.2]) as srv:
        out = run_stress(srv.url, "fake", profile(24), MEDIAN_ONLY)
    [step] = out.steps
    assert step.settled == "cap" and step.requests_to_verdict == step.total_requests == 24


def test_rate_profile_stops_sending_once_settled() -> None:
    # 50 a second: sending all 200 would take 4 s, the verdict needs well under 1 s of
    # answers (at 200 a second a busy machine could send them all before it came).
    rate = profile(200, kind="rate", request_rate=50.0, concurrency=None)
    with FakeServer(tokens=8, first_token_delay_s=0.3) as srv:
        out = run_stress(srv.url, "fake", rate, MEDIAN_ONLY)
    [step] = out.steps
    assert step.settled == "fail" and step.total_requests < 200


def test_settled_fields_in_the_report(server: FakeServer) -> None:
    out = run_stress(server.url, "fake", profile(200), MEDIAN_ONLY)
    doc = to_json(out.steps, slo=out.slo, failures=out.failures)
    assert doc["settled"] == "pass" and doc["requests_to_verdict"] == out.steps[0].total_requests
    assert table_rows(out.steps)[0]["settled"] == "pass"
    md = to_markdown(out.steps, endpoint=server.url, model="fake", profile=out.profile.model_dump())
    assert "n to verdict" in md and "Settled:" in md
    # Without the gate the fields stay empty and the run is the fixed-size one.
    plain = run_stress(server.url, "fake", profile(12, sequential=None), MEDIAN_ONLY)
    assert plain.steps[0].settled is None and plain.steps[0].total_requests == 12
