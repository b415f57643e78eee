"""The load generator against a real streaming HTTP server: profiles, faults, bounds."""

from __future__ import annotations

import threading
import time

import pytest

from paddock.errors import EndpointDown
from paddock.stress.loadgen import arrival_offsets, chat_url, run_load_sync
from paddock.stress.metrics import calculate_metrics
from paddock.stress.profiles import load_profile
from paddock.stress.runner import run_stress
from paddock.testkit.ports import free_port
from tests.stress.fakeserver import FakeServer


def test_chat_url() -> None:
    assert chat_url("http://h:1") == "http://h:1/v1/chat/completions"
    assert chat_url("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    assert chat_url("http://h:1/v1/chat/completions") == "http://h:1/v1/chat/completions"


def test_synchronous(server: FakeServer) -> None:
    server.token_delay_s = 0.002
    p = load_profile({"kind": "synchronous", "num_requests": 5, "warmup_requests": 2})
    [run] = run_load_sync(server.url, "fake", p)
    assert run.concurrency == 1 and len(run.results) == 5
    assert server.requests_seen == 1 + 2 + 5  # test request, warm-ups, measured
    r = run.results[0]
    assert r.success and r.output_tokens == 8 and len(r.itl) == 8  # role chunk + 8 tokens
    assert r.text.split() == [f"w{i}" for i in range(8)]
    assert r.prompt_tokens > 0 and r.ttft > 0 and r.latency >= r.ttft
    starts = [x.start_time for x in run.results]
    ends = [x.start_time + x.latency for x in run.results]
    assert all(s >= e for s, e in zip(starts[1:], ends[:-1], strict=False))  # one at a time


def test_request_body(server: FakeServer) -> None:
    p = load_profile(
        {
            "preset": "smoke",
            "num_requests": 1,
            "warmup_requests": 0,
            "ignore_eos": True,
            "max_tokens": 5,
            "temperature": 0.7,
        }
    )
    run_load_sync(server.url, "my-model", p)
    body = server.bodies[-1]
    assert body["model"] == "my-model" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 5 and body["ignore_eos"] is True and body["temperature"] == 0.7
    assert body["messages"][-1]["role"] == "user"


def test_concurrent_keeps_n_in_flight(server: FakeServer) -> None:
    server.first_token_delay_s = 0.05
    p = load_profile(
        {"kind": "concurrent", "concurrency": 4, "num_requests": 12, "warmup_requests": 0}
    )
    [run] = run_load_sync(server.url, "fake", p)
    m = calculate_metrics(run.results, run.duration_s, concurrency=run.concurrency)
    assert m.completed == 12 and m.concurrency == 4
    # 12 requests of >= 50 ms at 4 in flight: three waves, not twelve.
    assert 0.15 <= run.duration_s < 0.55  # one at a time would take >= 0.6 s


def test_rate_poisson_arrivals(server: FakeServer) -> None:
    p = load_profile({"kind": "rate", "request_rate": 40, "num_requests": 20, "warmup_requests": 0})
    [run] = run_load_sync(server.url, "fake", p)
    assert len(run.results) == 20 and all(r.success for r in run.results)
    assert run.request_rate == 40 and run.concurrency is None
    span = max(r.start_time for r in run.results) - min(r.start_time for r in run.results)
    assert 0.3 < span < 1.2  # the 20th arrival is rescaled to 20/40 = 0.5 s


def test_arrival_offsets_like_vllm() -> None:
    offs = arrival_offsets(100, rate=10, burstiness=1.0, seed=1)
    assert offs[-1] == pytest.approx(10.0) and offs == sorted(offs)
    even = arrival_offsets(10, rate=10, burstiness=1e9, seed=1)
    gaps = [b - a for a, b in zip(even, even[1:], strict=False)]
    assert max(gaps) - min(gaps) < 1e-3  # huge burstiness → evenly spaced


def test_rate_with_concurrency_cap(server: FakeServer) -> None:
    server.first_token_delay_s = 0.1
    p = load_profile(
        {
            "kind": "rate",
            "request_rate": 1000,
            "concurrency": 2,
            "num_requests": 6,
            "warmup_requests": 0,
        }
    )
    [run] = run_load_sync(server.url, "fake", p)
    assert len(run.results) == 6 and run.duration_s >= 0.3  # 3 waves of 2


def test_sweep_runs_each_concurrency(server: FakeServer) -> None:
    p = load_profile(
        {"kind": "sweep", "sweep_concurrencies": [1, 2, 4], "num_requests": 6, "warmup_requests": 1}
    )
    runs = run_load_sync(server.url, "fake", p)
    assert [r.concurrency for r in runs] == [1, 2, 4]
    assert all(len(r.results) == 6 and all(x.success for x in r.results) for r in runs)
    assert server.requests_seen == 1 + 1 + 18


def test_a_run_after_warm_up_sends_no_test_request(server: FakeServer) -> None:
    p = load_profile(
        {"kind": "concurrent", "concurrency": 2, "num_requests": 4, "test_request": False}
    )
    [run] = run_load_sync(server.url, "fake", p)
    assert len(run.results) == 4 and all(r.success for r in run.results)
    assert server.requests_seen == 2 + 4  # warm-ups and measured: no test request


def test_without_its_test_request_a_dead_endpoint_is_measured_as_errors() -> None:
    p = load_profile({"preset": "smoke", "test_request": False, "warmup_requests": 0})
    out = run_stress(f"http://127.0.0.1:{free_port()}", "fake", p)
    assert not out.passed and out.steps[0].failed == out.steps[0].total_requests > 0


def test_endpoint_down_before_the_run_fails_fast() -> None:
    t = time.perf_counter()
    with pytest.raises(EndpointDown, match="test request .* failed before the run: ConnectError"):
        run_stress(f"http://127.0.0.1:{free_port()}", "fake", "smoke")
    assert time.perf_counter() - t < 3


def test_endpoint_answering_500_before_the_run() -> None:
    with FakeServer(fail_every=1) as srv:
        with pytest.raises(EndpointDown, match="HTTP 500"):
            run_stress(srv.url, "fake", "smoke")
        assert srv.requests_seen == 1


def test_some_requests_fail() -> None:
    with FakeServer(fail_every=4, healthy_first=1) as srv:
        out = run_stress(
            srv.url, "fake", {"preset": "smoke", "num_requests": 20, "warmup_requests": 0}
        )
    [m] = out.steps
    assert (m.completed, m.failed, m.timed_out) == (15, 5, 0)  # requests 4, 8, …, 20
    assert m.error_rate == pytest.approx(0.25)
    assert any("error rate 25.0% > 5.0%" in f for f in out.failures)


def test_stalled_stream_times_out_and_run_ends_in_bound() -> None:
    with FakeServer(stall_after=2, healthy_first=1) as srv:
        p = {
            "kind": "concurrent",
            "concurrency": 2,
            "num_requests": 4,
            "warmup_requests": 0,
            "request_timeout_s": 0.3,
            "max_duration_s": 5,
        }
        t = time.perf_counter()
        out = run_stress(srv.url, "fake", p)
        elapsed = time.perf_counter() - t
    [m] = out.steps
    assert m.timed_out == 4 and m.completed == 0
    assert 0.6 <= elapsed < 2.5  # two waves of 0.3 s timeouts
    assert out.failures == ["no request completed (0 failed, 4 timed out)"]


def test_run_is_cut_at_its_duration_bound() -> None:
    # Each request would stream for 10 s; the run must stop at 1 s and count them.
    with FakeServer(tokens=50, token_delay_s=0.2, healthy_first=1) as srv:
        p = {
            "kind": "concurrent",
            "concurrency": 3,
            "num_requests": 30,
            "warmup_requests": 0,
            "max_duration_s": 1.0,
            "max_tokens": 50,
        }
        t = time.perf_counter()
        out = run_stress(srv.url, "fake", p)
        elapsed = time.perf_counter() - t
    [m] = out.steps
    assert elapsed < 2.5 and m.duration_s == pytest.approx(1.0, abs=0.3)
    assert m.total_requests == 3 and m.timed_out == 3  # unsent requests are not counted


def test_endpoint_dies_during_the_run() -> None:
    srv = FakeServer(tokens=8, token_delay_s=0.01, healthy_first=1).start()
    threading.Timer(0.5, srv.stop).start()
    p = {
        "kind": "concurrent",
        "concurrency": 2,
        "num_requests": 400,
        "warmup_requests": 0,
        "max_duration_s": 10,
        "request_timeout_s": 2,
    }
    t = time.perf_counter()
    out = run_stress(srv.url, "fake", p)
    assert time.perf_counter() - t < 5
    [m] = out.steps
    assert m.completed > 0 and m.failed + m.timed_out > 0
    assert m.total_requests == m.completed + m.failed + m.timed_out
    assert out.failures  # the gate reports it
