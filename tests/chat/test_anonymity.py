"""What a chat user may learn: one model's name and why (beta), nothing at all before the
vote (arena) — not even when a model fails, or its server echoes its name back."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from aiohttp import web

from paddock import conversations as conv
from paddock import crud
from paddock.models import Submission
from tests.chat.conftest import Api, Deploy, events, make_dev
from tests.chat.fakes import ChatFakeServer


class Echoing(ChatFakeServer):
    """A model server whose errors name the model, as vLLM's do ("The model `x` does not
    exist"): ``echo`` "refuse" answers 404 so, "give-up" ends a reply with such an error
    event after one word; None answers normally."""

    echo: str | None = None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if self.echo is None:
            return await super()._chat(request)
        self.requests_seen += 1
        name = (await request.json())["model"]
        said = f"the model `{name}` (org/{name}) ran out of luck"
        if self.echo == "refuse":
            return web.json_response({"error": {"message": said}}, status=404)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        head = '{"id":"x","object":"chat.completion.chunk","model":"fake","choices":[{"index":0,'
        await resp.write(f'data: {head}"delta":{{"content":"w0 "}}}}]}}\n\n'.encode())
        await resp.write(b"data: " + json.dumps({"error": {"message": said}}).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


@pytest.fixture
def pair() -> Iterator[tuple[Echoing, Echoing]]:
    a, b = Echoing(tokens=3), Echoing(tokens=3)
    with a, b:
        yield a, b


def arena(
    http: httpx.Client, deploy: Deploy, pair: tuple[Echoing, Echoing]
) -> tuple[Submission, Submission, str, list[str]]:
    """An arena of aurora-1b (A: the newer) and breeze-3b (B); the bodies the user saw."""
    a = deploy(pair[0].url, name="aurora-1b", developer="alice", age_s=10)
    b = deploy(pair[1].url, name="breeze-3b", developer="bob", age_s=20)
    resp = http.post("/chat/conversations", json={"mode": "arena", "user_id": "u-9"})
    assert resp.status_code == 201, resp.text
    stored = conv.require_conversation(conversation_id=resp.json()["conversation_id"])
    assert (stored.submission_id, stored.model_b_id) == (a.id, b.id)
    return a, b, stored.id, [resp.text]


def assert_anonymous(seen: list[str], *subs: Submission) -> None:
    text = "\n".join(seen).lower()
    for sub in subs:
        for clue in (sub.id, sub.display_name, sub.source, sub.developer):
            assert clue.lower() not in text, f"{clue!r} leaked: {text}"


def say(http: httpx.Client, cid: str, text: str) -> httpx.Response:
    return http.post(f"/chat/conversations/{cid}/messages", json={"content": text})


def test_an_arena_whose_b_model_is_down_names_no_model_before_the_vote(
    http: httpx.Client, deploy: Deploy, pair: tuple[Echoing, Echoing]
) -> None:
    a, b, cid, seen = arena(http, deploy, pair)
    first = say(http, cid, "Hello both")
    seen.append(first.text)
    assert {e["side"] for e in events(first) if e.get("done")} == {"a", "b"}

    pair[1].fail_every = 1  # B's server now answers 500
    down = say(http, cid, "Still there?")
    seen.append(down.text)
    assert down.status_code == 503
    assert down.json()["detail"].startswith("Model B stopped answering (HTTP 500). Your message")
    again = http.post(f"/chat/conversations/{cid}/regenerate")
    seen.append(again.text)
    assert again.status_code == 503 and again.json()["detail"].startswith("Model B stopped")
    assert_anonymous(seen, a, b)

    # The record keeps the real name: developers and operators read it, not the user.
    failed = [m for m in conv.messages_of(conversation_id=cid) if m.error]
    assert [m.side for m in failed] == ["b", "b"]
    assert all(m.error and m.error.startswith("breeze-3b stopped answering") for m in failed)

    vote = http.post(f"/chat/conversations/{cid}/vote", json={"winner": "model_a"})
    assert vote.status_code == 201  # and only now are they named
    assert (vote.json()["model_a"]["name"], vote.json()["model_b"]["name"]) == (
        "aurora-1b",
        "breeze-3b",
    )


def test_what_a_failing_servers_says_is_masked_in_an_arena(
    http: httpx.Client, deploy: Deploy, pair: tuple[Echoing, Echoing]
) -> None:
    a, b, cid, seen = arena(http, deploy, pair)
    pair[1].echo = "give-up"  # B breaks off mid-reply, naming itself
    resp = say(http, cid, "Tell me a story")
    seen.append(resp.text)
    assert resp.status_code == 200  # both streams had started
    got = events(resp)
    assert [e["done"] for e in got if e["side"] == "a" and "done" in e] == [True]
    (error,) = [e["error"] for e in got if "error" in e]
    assert error.startswith(
        "Model B stopped answering (the server gave up on the reply: the model `Model B` "
        "(Model B) ran out of luck)"
    )
    assert [e["side"] for e in got if "error" in e] == ["b"]

    pair[1].echo = "refuse"  # B refuses the request, naming itself
    refused = say(http, cid, "Another one")
    seen.append(refused.text)
    assert refused.status_code == 422
    assert refused.json()["detail"] == (
        "Model B refused this request (HTTP 404): the model `Model B` (Model B) ran out of luck"
    )
    assert_anonymous(seen, a, b)
    stored = [m.error for m in conv.messages_of(conversation_id=cid) if m.error]
    assert stored and "breeze-3b" in str(stored[0])


def test_an_arena_whose_b_model_was_taken_down_says_so_without_naming_it(
    http: httpx.Client, deploy: Deploy, pair: tuple[Echoing, Echoing]
) -> None:
    a, b, cid, seen = arena(http, deploy, pair)
    dep = crud.active_deployment(submission_id=b.id)
    assert dep is not None and dep.id is not None
    crud.close_deployment(deployment_id=dep.id)
    gone = say(http, cid, "Hello?")
    seen.append(gone.text)
    assert gone.status_code == 404
    assert gone.json()["detail"] == "Model B is no longer being served; start a new conversation"
    assert_anonymous(seen, a, b)


def test_a_beta_user_learns_their_models_name_and_why_and_nothing_of_the_others(
    api: Api, http: httpx.Client, deploy: Deploy, fake: ChatFakeServer
) -> None:
    old = deploy(fake.url, name="old-timer", developer="olga", age_s=300)
    rival = deploy(fake.url, name="rival", developer="rita", age_s=200)
    new = deploy(fake.url, name="newcomer", developer="nina", age_s=100)
    resp = http.post("/chat/conversations", json={"user_id": "u-1"})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body == {
        "conversation_id": body["conversation_id"],
        "mode": "beta",
        "model": "newcomer",
        "route": {
            "reason": "newcomer still needs 20 of its 20 ratings, so your feedback helps its "
            "developer most"
        },
    }
    assert_anonymous([resp.text], old, rival)
    assert new.id not in resp.text and "health" not in resp.text

    stored = conv.require_conversation(conversation_id=body["conversation_id"]).route
    assert stored["chosen"] == [new.id]
    assert [c["name"] for c in stored["candidates"]] == ["newcomer", "rival", "old-timer"]
    assert "newcomer" in stored["reason"] and "3 models need as many" in stored["reason"]

    with api.client(make_dev("dana").key) as dev:  # the developers' view explains it all
        explained = dev.get("/route").json()
    assert {c["name"] for c in explained["candidates"]} == {"newcomer", "rival", "old-timer"}
    assert explained["reason"] == stored["reason"]


def test_a_beta_user_is_told_why_once_every_model_has_its_ratings(
    http: httpx.Client, deploy: Deploy, fake: ChatFakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from paddock.config import reset_settings

    monkeypatch.setenv("PADDOCK_ROUTER_TARGET_FEEDBACK", "0")
    reset_settings()
    deploy(fake.url, name="solo")
    resp = http.post("/chat/conversations", json={"user_id": "u-1"})
    assert resp.json()["route"] == {
        "reason": "solo is the newest model here, and new models are what this beta is for"
    }


def test_an_arena_start_tells_nothing(
    http: httpx.Client, deploy: Deploy, pair: tuple[Echoing, Echoing]
) -> None:
    a, b, cid, seen = arena(http, deploy, pair)
    assert json.loads(seen[0]) == {
        "conversation_id": cid,
        "mode": "arena",
        "model": None,
        "route": None,
    }
    stored = conv.require_conversation(conversation_id=cid).route
    assert stored["chosen"] == [a.id, b.id] and len(stored["candidates"]) == 2
