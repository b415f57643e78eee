"""The router: the healthy model furthest from its rating target, newest on ties."""

from __future__ import annotations

import asyncio
from typing import Literal

import httpx
import pytest

from paddock import availability, verdicts
from paddock import conversations as conv
from paddock.models import ConversationMode
from paddock.router import NoModelAvailable, RouteDecision, RoutePolicy, choose
from paddock.testkit.ports import free_port
from tests.chat.conftest import Deploy
from tests.chat.fakes import ChatFakeServer

POLICY = RoutePolicy(target_feedback=3, probe_timeout_s=0.5, reprobe_s=0.0)


def route(mode: Literal["beta", "arena"] = "beta", policy: RoutePolicy = POLICY) -> RouteDecision:
    async def run() -> RouteDecision:
        async with httpx.AsyncClient(trust_env=False) as client:
            return await choose(client, mode=mode, policy=policy)

    return asyncio.run(run())


def rate(submission_id: str, n: int) -> None:
    for _ in range(n):
        c = conv.start_conversation(
            mode=ConversationMode.beta, user_id="u", submission_id=submission_id
        )
        verdicts.end_with_feedback(conversation_id=c.id, thumbs_up=True, text=None)


def test_fewest_ratings_win_and_the_newest_breaks_ties(
    deploy: Deploy, fake: ChatFakeServer
) -> None:
    old = deploy(fake.url, name="old", age_s=300)
    mid = deploy(fake.url, name="mid", age_s=200)
    new = deploy(fake.url, name="new", age_s=100)
    rate(new.id, 2)
    rate(mid.id, 1)
    rate(old.id, 1)
    decision = route()
    assert decision.chosen == [mid.id]  # mid and old need 2 each; mid is newer
    assert [c.name for c in decision.candidates] == ["mid", "old", "new"]
    assert [(c.ratings, c.needed, c.healthy) for c in decision.candidates] == [
        (1, 2, True),
        (1, 2, True),
        (2, 1, True),
    ]
    assert decision.candidates[0].age_s == pytest.approx(200, abs=5)
    assert "2 models need as many, and it is the newest of them" in decision.reason


def test_once_every_model_has_its_target_the_newest_wins(
    deploy: Deploy, fake: ChatFakeServer
) -> None:
    old = deploy(fake.url, name="old", age_s=300)
    new = deploy(fake.url, name="new", age_s=100)
    rate(old.id, 3)
    rate(new.id, 5)
    assert route().chosen == [new.id]


def test_arena_draws_two_distinct_models_the_same_way(deploy: Deploy, fake: ChatFakeServer) -> None:
    a = deploy(fake.url, name="a", age_s=30)
    b = deploy(fake.url, name="b", age_s=20)
    c = deploy(fake.url, name="c", age_s=10)
    rate(c.id, 3)
    decision = route("arena")
    assert decision.chosen == [b.id, a.id]
    assert decision.reason.startswith("A: b (")
    assert "; B: a (" in decision.reason


def test_a_model_marked_down_is_probed_and_comes_back_when_it_answers(
    deploy: Deploy, fake: ChatFakeServer
) -> None:
    dead_url = f"http://127.0.0.1:{free_port()}"
    back = deploy(fake.url, name="back", age_s=10)
    dead = deploy(dead_url, name="dead", age_s=5)
    other = deploy(fake.url, name="other", age_s=20)
    rate(other.id, 2)
    availability.mark_down(submission_id=back.id, error="HTTP 500")
    availability.mark_down(submission_id=dead.id, error="no connection")
    decision = route()
    assert decision.chosen == [back.id]
    by_name = {c.name: c for c in decision.candidates}
    assert by_name["back"].health == "recovered (probe answered)"
    assert not by_name["dead"].healthy and "probe failed" in by_name["dead"].health
    assert decision.candidates[-1].name == "dead"  # the unhealthy rank last
    assert availability.health_of(submission_ids=[back.id])[back.id].healthy
    assert not availability.health_of(submission_ids=[dead.id])[dead.id].healthy


def test_a_recently_failed_model_is_not_probed_again_at_once(
    deploy: Deploy, fake: ChatFakeServer
) -> None:
    sub = deploy(fake.url, name="flaky")
    spare = deploy(fake.url, name="spare")
    rate(spare.id, 3)
    availability.mark_down(submission_id=sub.id, error="HTTP 502")
    patient = RoutePolicy(target_feedback=3, probe_timeout_s=0.5, reprobe_s=60)
    decision = route(policy=patient)
    assert decision.chosen == [spare.id]
    assert "probed again shortly" in decision.candidates[-1].health


def test_no_healthy_model_is_a_transient_error(deploy: Deploy, fake: ChatFakeServer) -> None:
    with pytest.raises(NoModelAvailable, match="0 healthy of 0 served"):
        route()
    deploy(fake.url, name="only")
    with pytest.raises(NoModelAvailable, match="new arena conversation"):
        route("arena")
