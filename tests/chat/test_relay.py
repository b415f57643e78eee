"""The relay against a real streaming server: deltas, timings, and a model that fails."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
import pytest

from paddock import availability
from paddock.availability import Served
from paddock.errors import EndpointDown
from paddock.prompting import Turn, build_request
from paddock.relay import Relay, ReplyRefused, ReplyStats
from paddock.testkit.ports import free_port
from tests.chat.conftest import Deploy
from tests.chat.fakes import ChatFakeServer

T = TypeVar("T")
FORMATTER = {"response_template": "{bot_name}:"}


def run(fn: Callable[[Relay], Awaitable[T]], relay: Relay | None = None) -> T:
    async def main() -> T:
        r = relay or Relay()
        try:
            return await fn(r)
        finally:
            await r.aclose()

    return asyncio.run(main())


def relay_once(served: Served, relay: Relay | None = None) -> tuple[list[str], ReplyStats]:
    request = build_request(
        submission=served.submission, model_name=served.served_name, turns=[Turn("user", "hi")]
    )

    async def go(r: Relay) -> tuple[list[str], ReplyStats]:
        stream = await r.open(served, request)
        deltas = [d async for d in stream]
        return deltas, stream.stats

    return run(go, relay)


def test_a_reply_streams_with_its_timings(deploy: Deploy, fake: ChatFakeServer) -> None:
    fake.first_token_delay_s = 0.05
    sub = deploy(fake.url, name="smol", params={"temperature": 0.5})
    deltas, stats = relay_once(availability.require_served(submission_id=sub.id))
    assert deltas == [f"w{i} " for i in range(5)]
    assert stats.text == "w0 w1 w2 w3 w4 " and stats.output_tokens == 5
    assert stats.ttft_ms is not None and stats.latency_ms is not None
    assert 50 <= stats.ttft_ms <= stats.latency_ms
    assert stats.finish_reason == "length"
    sent = fake.bodies[-1]
    assert sent["model"] == "smol" and sent["stream"] is True and sent["temperature"] == 0.5


def test_a_raw_prompt_goes_to_completions(deploy: Deploy, fake: ChatFakeServer) -> None:
    sub = deploy(fake.url, name="Bot", formatter=FORMATTER)
    deltas, stats = relay_once(availability.require_served(submission_id=sub.id))
    assert "".join(deltas) == "t0 t1 t2 t3 t4 " and stats.output_tokens == 5
    assert fake.bodies[-1]["prompt"].endswith("User: hi\nBot:")


def test_one_pooled_connection_serves_reply_after_reply(
    deploy: Deploy, fake: ChatFakeServer
) -> None:
    served = availability.require_served(submission_id=deploy(fake.url).id)
    request = build_request(
        submission=served.submission, model_name="m", turns=[Turn("user", "hi")]
    )

    async def go(r: Relay) -> int:
        for _ in range(5):
            stream = await r.open(served, request)
            assert len([d async for d in stream]) == 5
        pool = r.client._transport._pool  # type: ignore[attr-defined]
        return len(pool.connections)

    assert run(go) == 1


def _down_after(served: Served, expect: str, relay: Relay | None = None) -> list[str]:
    got: list[str] = []

    async def go(r: Relay) -> None:
        request = build_request(
            submission=served.submission, model_name="m", turns=[Turn("user", "hi")]
        )
        stream = await r.open(served, request)
        async for d in stream:
            got.append(d)

    with pytest.raises(EndpointDown, match=expect) as info:
        run(go, relay)
    assert "Your message is saved" in str(info.value)
    health = availability.health_of(submission_ids=[served.submission.id])[served.submission.id]
    assert not health.healthy
    return got


def test_no_connection_marks_the_model_down(deploy: Deploy) -> None:
    sub = deploy(f"http://127.0.0.1:{free_port()}", name="gone")
    _down_after(availability.require_served(submission_id=sub.id), "gone stopped answering")


def test_a_5xx_marks_the_model_down(deploy: Deploy, fake: ChatFakeServer) -> None:
    fake.fail_every = 1
    sub = deploy(fake.url)
    _down_after(availability.require_served(submission_id=sub.id), r"HTTP 500")


def test_a_stream_that_breaks_marks_the_model_down(deploy: Deploy) -> None:
    with ChatFakeServer(break_after=2) as server:
        sub = deploy(server.url)
        got = _down_after(availability.require_served(submission_id=sub.id), "the stream broke")
    assert got == ["w0 ", "w1 "]


def test_a_stalled_stream_marks_the_model_down(deploy: Deploy) -> None:
    with ChatFakeServer(tokens=5, stall_after=1) as server:
        sub = deploy(server.url)
        impatient = Relay(httpx.AsyncClient(timeout=httpx.Timeout(0.3), trust_env=False))
        got = _down_after(
            availability.require_served(submission_id=sub.id), "ReadTimeout", relay=impatient
        )
    assert got == ["w0 "]


def test_a_4xx_is_the_requests_fault_not_the_models(deploy: Deploy) -> None:
    with ChatFakeServer(refuse_with=400) as server:
        sub = deploy(server.url, name="smol")
        with pytest.raises(ReplyRefused, match="smol refused this request .HTTP 400.: This"):
            relay_once(availability.require_served(submission_id=sub.id))
    assert availability.health_of(submission_ids=[sub.id]) == {}
