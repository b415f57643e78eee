"""Rate limits: a burst goes through, the request after it is a 429 with `Retry-After`, the
bucket refills at its rate, and one caller's limit is never another's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from paddock.api.limits import Limiter, Limits, Rate, RateLimited
from tests.chat.fakes import ChatFakeServer
from tests.hardening.security_fixtures import (
    deploy_model,
    new_developer,
    own_database,
    paddock_app,
    settings_env,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_lets_a_burst_through_then_refills_at_its_rate() -> None:
    clock = Clock()
    limiter = Limiter(Rate(per_second=2.0, burst=3), clock=clock)
    assert [limiter.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("k") == pytest.approx(0.5)  # one token in half a second
    assert limiter.take("other") == 0.0  # buckets are per key
    clock.now += 0.5
    assert limiter.take("k") == 0.0
    assert limiter.take("k") == pytest.approx(0.5)
    clock.now += 60  # a long pause refills to the burst, not beyond
    assert [limiter.take("k") for _ in range(4)][-1] > 0


def test_a_refused_request_spends_nothing() -> None:
    clock = Clock()
    limiter = Limiter(Rate(per_second=1.0, burst=1), clock=clock)
    assert limiter.take("k") == 0.0
    for _ in range(50):  # hammering while limited does not push the next token back
        assert limiter.take("k") > 0
    clock.now += 1.0
    assert limiter.take("k") == 0.0


def test_a_rate_of_zero_is_no_limit() -> None:
    limiter = Limiter(Rate(per_second=0.0, burst=1))
    assert all(limiter.take("k") == 0.0 for _ in range(1000))
    assert len(limiter) == 0


def test_memory_stays_bounded_however_many_keys_callers_invent() -> None:
    clock = Clock()
    limiter = Limiter(Rate(per_second=1.0, burst=2), max_keys=100, clock=clock)
    limiter.take("busy")
    limiter.take("busy")
    for i in range(10_000):
        limiter.take(f"invented-{i}")
        clock.now += 0.0001
    assert len(limiter) <= 100


def test_retry_after_is_a_whole_number_of_seconds_at_least_one() -> None:
    assert RateLimited("x", 0.01).retry_after == 1
    assert RateLimited("x", 2.2).retry_after == 3


# --------------------------------------------------------------------------- over HTTP


@pytest.fixture
def tight(tmp_path: Path) -> Iterator[None]:
    """Small limits (bursts of 3, slow refill), a database of the test's own."""
    with (
        settings_env(
            PADDOCK_RATE_SUBMISSIONS_PER_HOUR="1",
            PADDOCK_RATE_SUBMISSIONS_BURST="3",
            PADDOCK_RATE_CHAT_PER_MINUTE="1",
            PADDOCK_RATE_CHAT_BURST="4",
            PADDOCK_RATE_STARTS_PER_MINUTE_PER_IP="1",
            PADDOCK_RATE_STARTS_BURST="3",
        ),
        own_database(tmp_path),
    ):
        yield


def test_submissions_are_limited_per_developer(tight: None) -> None:
    jane, joe = new_developer(), new_developer()
    body = {"source": "org/model", "dry_run": True}
    with TestClient(paddock_app()) as client:
        as_jane = {"Authorization": f"Bearer {jane.key}"}
        codes = [client.post("/submissions", json=body, headers=as_jane).status_code]
        codes += [client.post("/submissions", json=body, headers=as_jane).status_code]
        codes += [client.post("/submissions", json=body, headers=as_jane).status_code]
        refused = client.post("/submissions", json=body, headers=as_jane)
        assert codes == [200, 200, 200]
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert "too many submissions" in refused.json()["detail"]
        # Joe's bucket is his own; a caller without a key spends nobody's.
        as_joe = {"Authorization": f"Bearer {joe.key}"}
        assert client.post("/submissions", json=body, headers=as_joe).status_code == 200
        assert client.post("/submissions", json=body).status_code == 401


def test_conversation_starts_are_limited_per_address_whatever_the_user(tight: None) -> None:
    with ChatFakeServer(tokens=3) as fake:
        deploy_model(fake.url)
        app = paddock_app()
        with TestClient(app, client=("10.0.0.1", 5000)) as one:
            codes = [
                one.post("/chat/conversations", json={"user_id": f"u{i}"}).status_code
                for i in range(4)
            ]
            assert codes == [201, 201, 201, 429]
        with TestClient(app, client=("10.0.0.2", 5000)) as two:
            assert two.post("/chat/conversations", json={"user_id": "u9"}).status_code == 201


def test_chat_turns_are_limited_per_user(tight: None) -> None:
    """Four requests per user: a start and three messages; the fifth waits."""
    with ChatFakeServer(tokens=3) as fake:
        deploy_model(fake.url)
        with TestClient(paddock_app()) as client:
            started = client.post("/chat/conversations", json={"user_id": "ann"})
            cid = started.json()["conversation_id"]
            path = f"/chat/conversations/{cid}/messages"
            for _ in range(3):
                assert client.post(path, json={"content": "hi"}).status_code == 200
            refused = client.post(path, json={"content": "hi"})
            assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
            assert client.post(f"/chat/conversations/{cid}/regenerate").status_code == 429
            # Another user on the same address still talks (one start left there).
            other = client.post("/chat/conversations", json={"user_id": "bob"})
            assert other.status_code == 201
            # Rating is not limited: one per conversation is all it takes.
            rated = client.post(f"/chat/conversations/{cid}/feedback", json={"thumbs_up": True})
            assert rated.status_code == 201


def test_openai_completions_count_as_chat_turns(tight: None) -> None:
    with ChatFakeServer(tokens=3) as fake:
        deploy_model(fake.url, name="fake")
        with TestClient(paddock_app()) as client:
            body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
            first = client.post("/v1/chat/completions", json={**body, "user": "carl"})
            assert first.status_code == 200
            cid = first.headers["X-Paddock-Conversation"]
            headers = {"X-Paddock-Conversation": cid}
            codes = [
                client.post("/v1/chat/completions", json=body, headers=headers).status_code
                for _ in range(4)
            ]
            assert codes == [200, 200, 200, 429]


def test_limits_come_from_the_settings() -> None:
    with settings_env(PADDOCK_RATE_CHAT_PER_MINUTE="0", PADDOCK_RATE_SUBMISSIONS_BURST="7"):
        limits = Limits.from_settings()
    assert limits.chat.rate.unlimited
    assert limits.submissions.rate.burst == 7


def test_limited_routes_document_429_with_retry_after() -> None:
    schema = paddock_app().openapi()
    for path, method in [
        ("/submissions", "post"),
        ("/submissions/{submission_id}/redeploy", "post"),
        ("/chat/conversations", "post"),
        ("/chat/conversations/{conversation_id}/messages", "post"),
        ("/chat/conversations/{conversation_id}/regenerate", "post"),
        ("/v1/chat/completions", "post"),
    ]:
        answer = schema["paths"][path][method]["responses"]["429"]
        assert "Retry-After" in answer["headers"], path
