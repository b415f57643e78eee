"""The chat front end over real HTTP: a real uvicorn, a real streaming model server."""

from __future__ import annotations

import json

import httpx
import pytest

from paddock import availability, crud, verdicts
from paddock import conversations as conv
from tests.chat.conftest import Deploy, events, fresh_policy
from tests.chat.fakes import ChatFakeServer


def start(http: httpx.Client, mode: str = "beta", **extra: object) -> dict[str, object]:
    resp = http.post("/chat/conversations", json={"mode": mode, "user_id": "u-1", **extra})
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def say(http: httpx.Client, cid: object, text: str) -> httpx.Response:
    return http.post(f"/chat/conversations/{cid}/messages", json={"content": text})


def test_a_beta_conversation_streams_and_keeps_its_history(
    http: httpx.Client, deploy: Deploy, fake: ChatFakeServer
) -> None:
    sub = deploy(fake.url, name="smol")
    started = start(http, consent=True)
    assert started["model"] == "smol"
    assert started["route"] == {
        "reason": "smol still needs 20 of its 20 ratings, so your feedback helps its developer most"
    }
    stored = conv.require_conversation(conversation_id=str(started["conversation_id"]))
    assert stored.route["chosen"] == [sub.id] and stored.user_hash != "u-1"
    assert stored.route["candidates"][0]["ratings"] == 0 and "smol" in stored.route["reason"]

    resp = say(http, started["conversation_id"], "Hello there")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    got = events(resp)
    assert [e["delta"] for e in got[:-1]] == ["w0 ", "w1 ", "w2 ", "w3 ", "w4 "]
    done = got[-1]
    assert done["done"] is True and done["output_tokens"] == 5
    assert 0 < done["ttft_ms"] <= done["latency_ms"]
    assert "side" not in done

    say(http, started["conversation_id"], "And again")
    assert [m["content"] for m in fake.bodies[-1]["messages"]] == [
        "Hello there",
        "w0 w1 w2 w3 w4 ",
        "And again",
    ]
    rows = conv.messages_of(conversation_id=str(started["conversation_id"]))
    reply = next(m for m in rows if m.id == done["message_id"])
    assert (reply.role, reply.submission_id, reply.output_tokens) == ("assistant", sub.id, 5)
    assert reply.ttft_ms == pytest.approx(done["ttft_ms"], abs=0.01)


def test_an_arena_hides_both_models_until_the_vote(
    http: httpx.Client, deploy: Deploy, fake: ChatFakeServer
) -> None:
    a = deploy(fake.url, name="alpha", age_s=10)
    b = deploy(fake.url, name="beta-model", age_s=20)
    started = start(http, "arena")
    assert started["model"] is None and started["route"] is None
    assert "alpha" not in str(started) and a.id not in str(started)
    got = events(say(http, started["conversation_id"], "Which of you is better?"))
    assert {e["side"] for e in got} == {"a", "b"}
    for side in ("a", "b"):
        mine = [e for e in got if e["side"] == side]
        assert "".join(e.get("delta", "") for e in mine) == "w0 w1 w2 w3 w4 "
        assert mine[-1]["done"] is True
    url = f"/chat/conversations/{started['conversation_id']}/vote"
    resp = http.post(url, json={"winner": "tie (bothbad)"})
    assert resp.status_code == 201, resp.text
    revealed = resp.json()
    assert revealed["model_a"] == {"submission_id": a.id, "name": "alpha", "developer": "alice"}
    assert revealed["model_b"]["submission_id"] == b.id
    again = http.post(url, json={"winner": "model_a"})
    assert again.status_code == 409 and "already has its vote" in again.json()["detail"]


def test_regenerate_replaces_the_last_reply_and_counts_a_retry(
    http: httpx.Client, deploy: Deploy, fake: ChatFakeServer
) -> None:
    sub = deploy(fake.url)
    cid = start(http)["conversation_id"]
    first = events(say(http, cid, "hi"))[-1]["message_id"]
    fake.tokens = 2
    resp = http.post(f"/chat/conversations/{cid}/regenerate")
    assert resp.status_code == 200
    got = events(resp)
    assert "".join(e.get("delta", "") for e in got) == "w0 w1 "
    assert [m["content"] for m in fake.bodies[-1]["messages"]] == ["hi"]
    rows = {m.id: m for m in conv.messages_of(conversation_id=str(cid))}
    assert rows[first].superseded
    assert rows[got[-1]["message_id"]].regenerated
    assert conv.retry_count(submission_id=sub.id) == 1
    assert [t.content for t in conv.history(conversation_id=str(cid))] == ["hi", "w0 w1 "]


def test_feedback_is_stored_once_and_ends_the_conversation(
    http: httpx.Client, deploy: Deploy, fake: ChatFakeServer
) -> None:
    sub = deploy(fake.url)
    cid = start(http)["conversation_id"]
    say(http, cid, "hi")
    url = f"/chat/conversations/{cid}/feedback"
    resp = http.post(url, json={"thumbs_up": False, "text": "reach me at bob@example.org"})
    assert resp.status_code == 201, resp.text
    assert resp.json()["thumbs_up"] is False
    stored = conv.feedback_of(submission_id=sub.id)  # committed before the 2xx
    assert [f.text for f in stored] == ["reach me at [email]"]
    twice = http.post(url, json={"thumbs_up": True})
    assert twice.status_code == 409 and "one per conversation" in twice.json()["detail"]
    assert conv.feedback_counts(submission_ids=[sub.id])[sub.id] == (1, 0, 0)
    after = say(http, cid, "still there?")
    assert after.status_code == 409 and "has ended" in after.json()["detail"]


def test_a_model_that_dies_is_left_out_until_it_answers_again(
    http: httpx.Client, deploy: Deploy, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh_policy(monkeypatch)
    flaky_server, steady_server = ChatFakeServer(tokens=3), ChatFakeServer(tokens=3)
    flaky_server.start()
    steady_server.start()
    try:
        deploy(flaky_server.url, name="flaky", age_s=1)
        steady = deploy(steady_server.url, name="steady", age_s=100)
        for _ in range(2):  # steady has its ratings; the router prefers flaky
            c = conv.start_conversation(mode="beta", user_id="x", submission_id=steady.id)  # type: ignore[arg-type]
            verdicts.end_with_feedback(conversation_id=c.id, thumbs_up=True, text=None)
        cid = start(http)["conversation_id"]
        assert events(say(http, cid, "one"))[-1]["done"] is True

        flaky_server.stop()  # the model's server dies mid-conversation
        resp = say(http, cid, "two")
        assert resp.status_code == 503
        assert resp.json()["detail"].startswith("flaky stopped answering (no connection")
        kept = conv.messages_of(conversation_id=str(cid))
        assert [m.content for m in kept if m.role == "user"] == ["one", "two"]
        assert kept[-1].error is not None  # the failed attempt is on record

        assert start(http)["model"] == "steady"  # the router stops choosing it
        flaky_server.start()  # it answers again
        back = start(http)
        assert back["model"] == "flaky"
        route = conv.require_conversation(conversation_id=str(back["conversation_id"])).route
        assert route["candidates"][0]["health"] == "recovered (probe answered)"
        retry = events(say(http, cid, "three"))
        assert retry[-1]["done"] is True
        assert fake_messages(flaky_server)[-1] == "three"
    finally:
        flaky_server.stop()
        steady_server.stop()


def fake_messages(server: ChatFakeServer) -> list[str]:
    return [m["content"] for m in server.bodies[-1]["messages"]]


def test_a_stream_that_breaks_ends_with_an_error_event(http: httpx.Client, deploy: Deploy) -> None:
    with ChatFakeServer(break_after=2) as server:
        sub = deploy(server.url, name="brittle")
        cid = start(http)["conversation_id"]
        resp = say(http, cid, "hi")
    assert resp.status_code == 200  # the stream had started
    got = events(resp)
    assert [e.get("delta") for e in got[:2]] == ["w0 ", "w1 "]
    assert got[-1]["error"].startswith("brittle stopped answering (the stream broke")
    assert not availability.health_of(submission_ids=[sub.id])[sub.id].healthy
    failed = conv.messages_of(conversation_id=str(cid))[-1]
    assert (failed.content, failed.error is not None) == ("w0 w1 ", True)


def test_unknown_conversations_and_torn_down_models_are_404(
    http: httpx.Client, deploy: Deploy, fake: ChatFakeServer
) -> None:
    assert say(http, "nope", "hi").status_code == 404
    sub = deploy(fake.url, name="gone")
    cid = start(http)["conversation_id"]
    dep = crud.active_deployment(submission_id=sub.id)
    assert dep is not None and dep.id is not None
    crud.close_deployment(deployment_id=dep.id)
    resp = say(http, cid, "hi")
    assert resp.status_code == 404 and "not being served" in resp.json()["detail"]
    assert conv.messages_of(conversation_id=str(cid)) == []  # refused before storing
    assert http.post(f"/chat/conversations/{cid}/regenerate").status_code == 404


def test_no_model_to_talk_to_is_503(http: httpx.Client) -> None:
    resp = http.post("/chat/conversations", json={"user_id": "u"})
    assert resp.status_code == 503 and "no model can take" in resp.json()["detail"]


@pytest.mark.parametrize(
    ("path", "body", "expect"),
    [
        ("messages", {"content": ""}, "content"),
        ("messages", {"content": "   \n"}, "is empty"),
        ("messages", {"content": "x" * 16_385}, "at most 16384 characters"),
        ("messages", {"content": "bin\u0000ary"}, "control character (U+0000"),
        ("messages", {"content": "esc\u001b[2J"}, "control character (U+001B"),
        ("messages", {"content": "lone \ud800 surrogate"}, "valid string"),
        ("messages", {"content": 42}, "content"),
        ("messages", {"content": "hi", "role": "system"}, "unknown field"),
        ("messages", {}, "content"),
        ("feedback", {"thumbs_up": "yes"}, "thumbs_up"),
        ("feedback", {"thumbs_up": 1}, "thumbs_up"),
        ("feedback", {"thumbs_up": True, "text": "a\u0007b"}, "control character"),
        ("feedback", {"thumbs_up": True, "text": "x" * 4001}, "at most 4000"),
        ("vote", {"winner": "both"}, "winner"),
    ],
)
def test_bad_bodies_are_422(
    http: httpx.Client,
    deploy: Deploy,
    fake: ChatFakeServer,
    path: str,
    body: object,
    expect: str,
) -> None:
    deploy(fake.url)
    cid = start(http)["conversation_id"]
    resp = http.post(  # ASCII-escaped JSON, so a lone surrogate travels as `\ud800`
        f"/chat/conversations/{cid}/{path}",
        content=json.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status_code == 422, resp.text
    assert expect in resp.json()["detail"]
    assert fake.requests_seen == 0 and conv.messages_of(conversation_id=str(cid)) == []


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"mode": "beta", "user_id": "u"', b"\x00\x01\x02", b"[]", b'"text"'],
)
def test_malformed_json_is_422_never_500(http: httpx.Client, raw: bytes) -> None:
    resp = http.post(
        "/chat/conversations", content=raw, headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 422, resp.text


@pytest.mark.parametrize(
    "body",
    [
        {"mode": "solo", "user_id": "u"},
        {"user_id": 7},
        {"user_id": ""},
        {"user_id": "u", "consent": "yes"},
        {"user_id": "u\u0000"},
        {"user_id": "u", "extra": 1},
    ],
)
def test_wrong_types_are_422(http: httpx.Client, body: dict[str, object]) -> None:
    resp = http.post("/chat/conversations", json=body)
    assert resp.status_code == 422, resp.text
