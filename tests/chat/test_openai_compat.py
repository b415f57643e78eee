"""The OpenAI-compatible routes, driven as an OpenAI client drives them.

The `openai` package is not installed in this environment, so these tests speak its wire
format with raw httpx (the last test runs the package itself when it is installed).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from paddock import conversations as conv
from paddock import crud
from paddock.models import ConversationMode
from tests.chat.conftest import Api, Deploy, events
from tests.chat.fakes import ChatFakeServer

HEADER = "X-Paddock-Conversation"


def ask(http: httpx.Client, model: str, *texts: str, **extra: Any) -> httpx.Response:
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)
    ]
    headers = extra.pop("headers", None)
    return http.post(
        "/v1/chat/completions",
        json={"model": model, "messages": messages, **extra},
        headers=headers,
    )


def test_models_lists_auto_ids_and_names(
    http: httpx.Client, deploy: Deploy, fake: ChatFakeServer
) -> None:
    old = deploy(fake.url, name="smol", age_s=50)
    new = deploy(fake.url, name="smol", age_s=10, developer="bob")
    gone = deploy(fake.url, name="gone")
    dep = crud.active_deployment(submission_id=gone.id)
    assert dep is not None and dep.id is not None
    crud.close_deployment(deployment_id=dep.id)
    body = http.get("/v1/models").json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["auto", new.id, "smol", old.id]
    assert body["data"][1] == {
        "id": new.id,
        "object": "model",
        "created": int(new.created_at.timestamp()),
        "owned_by": "bob",
    }


def test_a_whole_completion_is_stored_as_an_api_conversation(
    http: httpx.Client, deploy: Deploy, fake: ChatFakeServer
) -> None:
    sub = deploy(fake.url, name="smol", params={"temperature": 0.9})
    resp = ask(http, "smol", "Hi", "Hello!", "How are you?", temperature=0.2, max_tokens=3)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "chat.completion" and body["model"] == "smol"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "w0 w1 w2 "}
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3
    sent = fake.bodies[-1]
    assert (sent["temperature"], sent["max_tokens"]) == (0.2, 3)
    assert [m["content"] for m in sent["messages"]] == ["Hi", "Hello!", "How are you?"]
    cid = resp.headers[HEADER]
    stored = conv.require_conversation(conversation_id=cid)
    assert stored.mode == ConversationMode.api and stored.submission_id == sub.id
    assert "by name" in stored.route["reason"]
    rows = conv.messages_of(conversation_id=cid)
    assert [(m.role, m.content, m.submission_id) for m in rows] == [
        ("user", "Hi", None),
        ("assistant", "Hello!", None),  # context the client sent, not written here
        ("user", "How are you?", None),
        ("assistant", "w0 w1 w2 ", sub.id),
    ]


def test_streaming_gives_openai_chunks_then_done(
    http: httpx.Client, deploy: Deploy, fake: ChatFakeServer
) -> None:
    sub = deploy(fake.url, name="smol")
    resp = ask(
        http, sub.id, "Hi", stream=True, stream_options={"include_usage": True}, user="end-user"
    )
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event")
    got = events(resp)
    assert got[-1] == "[DONE]"
    chunks = got[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "w0 w1 w2 w3 w4 "
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5
    stored = conv.require_conversation(conversation_id=resp.headers[HEADER])
    assert stored.user_hash != "end-user" and len(stored.user_hash) == 64


def test_the_conversation_continues_by_header_or_user_field(
    http: httpx.Client, deploy: Deploy, fake: ChatFakeServer
) -> None:
    deploy(fake.url, name="smol")
    first = ask(http, "auto", "Hi")
    cid = first.headers[HEADER]
    reply = first.json()["choices"][0]["message"]["content"]
    second = ask(http, "auto", "Hi", reply, "More", headers={HEADER: cid})
    assert second.status_code == 200 and second.headers[HEADER] == cid
    third = ask(http, "smol", "Hi", reply, "More", "w0", "Again", user=cid)
    assert third.headers[HEADER] == cid
    users = [m.content for m in conv.messages_of(conversation_id=cid) if m.role == "user"]
    assert users == ["Hi", "More", "Again"]  # each turn stored once
    rated = http.post(f"/chat/conversations/{cid}/feedback", json={"thumbs_up": True})
    assert rated.status_code == 201  # rated like any other conversation


def test_auto_lets_the_router_choose(
    http: httpx.Client, deploy: Deploy, fake: ChatFakeServer
) -> None:
    deploy(fake.url, name="old", age_s=100)
    new = deploy(fake.url, name="new", age_s=1)
    resp = ask(http, "auto", "Hi")
    assert resp.json()["model"] == "new"
    stored = conv.require_conversation(conversation_id=resp.headers[HEADER])
    assert stored.route["chosen"] == [new.id] and len(stored.route["candidates"]) == 2


def test_unknown_and_torn_down_models_are_404(
    http: httpx.Client, deploy: Deploy, fake: ChatFakeServer
) -> None:
    assert ask(http, "nobody", "Hi").status_code == 404
    sub = deploy(fake.url, name="smol")
    cid = ask(http, "smol", "Hi").headers[HEADER]
    dep = crud.active_deployment(submission_id=sub.id)
    assert dep is not None and dep.id is not None
    crud.close_deployment(deployment_id=dep.id)
    resp = ask(http, "smol", "Hi")
    assert resp.status_code == 404 and "no longer served" in resp.json()["detail"]
    later = ask(http, "auto", "Hi", "w0", "More", headers={HEADER: cid})
    assert later.status_code == 404
    assert ask(http, "auto", "Hi", headers={HEADER: "nope"}).status_code == 404


def test_a_model_down_is_503_and_in_stream_an_openai_error(
    http: httpx.Client, deploy: Deploy
) -> None:
    with ChatFakeServer(fail_every=1) as server:
        deploy(server.url, name="smol")
        resp = ask(http, "smol", "Hi")
    assert resp.status_code == 503 and "smol stopped answering (HTTP 500)" in resp.text
    with ChatFakeServer(break_after=1) as server:
        deploy(server.url, name="brittle")
        resp = ask(http, "brittle", "Hi", stream=True)
    got = events(resp)
    assert got[-1]["error"]["message"].startswith("brittle stopped answering")
    assert "[DONE]" not in got


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        ({"model": "smol", "messages": []}, "messages"),
        ({"model": "smol", "messages": [{"role": "tool", "content": "x"}]}, "role"),
        ({"model": "smol", "messages": [{"role": "user", "content": "a\u0000"}]}, "control"),
        ({"model": "smol", "messages": [{"role": "assistant", "content": "x"}]}, "the user's"),
        ({"model": "smol", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        ({"model": "smol", "messages": [{"role": "user", "content": "x"}], "logprobs": True}, ""),
        ({"model": 3, "messages": [{"role": "user", "content": "x"}]}, "model"),
        (
            {"model": "smol", "messages": [{"role": "user", "content": "x"}], "stream": "yes"},
            "stream",
        ),
    ],
)
def test_bad_requests_are_422(
    http: httpx.Client, deploy: Deploy, fake: ChatFakeServer, body: Any, expect: str
) -> None:
    deploy(fake.url, name="smol")
    resp = http.post("/v1/chat/completions", json=body)
    assert resp.status_code == 422, resp.text
    assert expect in resp.json()["detail"]
    assert fake.requests_seen == 0


def test_the_conversation_stays_with_its_model(
    http: httpx.Client, deploy: Deploy, fake: ChatFakeServer
) -> None:
    deploy(fake.url, name="one")
    deploy(fake.url, name="two")
    cid = ask(http, "one", "Hi").headers[HEADER]
    resp = ask(http, "two", "Hi", "w0", "More", headers={HEADER: cid})
    assert resp.status_code == 422 and "talks to one" in resp.json()["detail"]


def test_the_openai_package_works_unchanged(api: Api, deploy: Deploy, fake: ChatFakeServer) -> None:
    openai = pytest.importorskip("openai")
    deploy(fake.url, name="smol")
    client = openai.OpenAI(base_url=f"{api.url}/v1", api_key="unused")
    assert "smol" in [m.id for m in client.models.list()]
    whole = client.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "Hi"}]
    )
    assert whole.choices[0].message.content == "w0 w1 w2 w3 w4 "
    stream = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "w0 w1 w2 w3 w4 "
