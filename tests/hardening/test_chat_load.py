"""The chat load bench, small and bounded, against a fake model: fifty conversations at
once, each rated once (a few twice), every accepted rating stored exactly once and no 5xx
but a 503 for a model that is down. `bench/bench_chat_load.py` runs the same users at
200 against vLLM."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import uvicorn

from paddock.testkit.ports import free_port
from tests.chat.fakes import ChatFakeServer
from tests.hardening.conftest import Hardening
from tests.hardening.security_fixtures import (
    deploy_model,
    own_database,
    paddock_app,
    settings_env,
)

ROOT = Path(__file__).resolve().parents[2]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_chat_load", ROOT / "bench/bench_chat_load.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


bench = _bench()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[str]:
    """The API in a thread, on a database of the test's own; every user comes from
    127.0.0.1, so the per-address start limit is off (the per-user one stays)."""
    with (
        settings_env(PADDOCK_RATE_STARTS_PER_MINUTE_PER_IP="0", PADDOCK_ROUTER_REPROBE_S="0.5"),
        own_database(tmp_path),
    ):
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(paddock_app(), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, name="paddock-load-api", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
            time.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(timeout=10)


def test_fifty_conversations_at_once_each_rated_exactly_once(
    api: str, hardening: Hardening
) -> None:
    with ChatFakeServer(tokens=6, first_token_delay_s=0.02, token_delay_s=0.005) as fake:
        deploy_model(fake.url)
        run = asyncio.run(bench.run_users(api, 50, turns=1, ramp_s=0.2, repeat_every=5))
    figures = bench.summary(run)
    check = bench.check_feedback(run)
    assert figures["errors"] == {}, figures["errors"]
    assert figures["messages_ok"] == 50
    assert check.accepted == check.stored == check.exactly_once == 50
    assert check.duplicates_sent == check.duplicates_refused == 10
    assert figures["ttft_ms"]["p99"] is not None
    assert figures["ttft_ms"]["p99"] <= figures["total_ms"]["p99"]
    hardening.record(
        category="load",
        kind="50 conversations at once, 10 duplicate ratings",
        source="api",
        stage="chat",
        outcome="all served",
        reason=(
            "50 answers, no errors; 50 ratings stored exactly once, 10 duplicates "
            f"refused; TTFT p99 {figures['ttft_ms']['p99']:.0f} ms"
        ),
    )


def test_a_failing_model_is_the_only_5xx_and_ratings_stay_exact(
    api: str, hardening: Hardening
) -> None:
    """A model answering every fourth request with a 500 is marked down: users then get
    503s naming the model as the problem, never paddock's own 5xx, and every rating that
    was accepted is stored once."""
    with ChatFakeServer(tokens=4, fail_every=4) as fake:
        deploy_model(fake.url)
        run = asyncio.run(bench.run_users(api, 30, turns=2, ramp_s=0.5, repeat_every=0))
    figures = bench.summary(run)
    check = bench.check_feedback(run)
    assert figures["unexpected_5xx"] == 0, figures["errors"]
    assert "503 model down" in figures["errors"]  # the fault did show
    assert check.ok
    assert check.accepted > 0 and check.stored == check.accepted + check.unanswered_stored
    hardening.record(
        category="load",
        kind="30 users, 2 turns, a model failing every 4th request",
        source="api",
        stage="chat",
        outcome="503 model down",
        reason=(
            "the model is marked down: users get 503s naming it, never paddock's "
            "own 5xx; every accepted rating stored once"
        ),
    )
