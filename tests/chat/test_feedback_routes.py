"""The developer's side: their own models' ratings and conversations, the board, the route."""

from __future__ import annotations

import json

from paddock import availability, verdicts
from paddock import conversations as conv
from paddock.db import session_scope
from paddock.models import ConversationMode, LeaderboardSnapshot
from tests.chat.conftest import Api, Deploy, make_dev
from tests.chat.fakes import ChatFakeServer


def talk(submission_id: str, *, consent: bool, up: bool | None, text: str = "hi") -> str:
    c = conv.start_conversation(
        mode=ConversationMode.beta, user_id="user-7", submission_id=submission_id, consent=consent
    )
    conv.add_user_message(conversation_id=c.id, content=text)
    conv.add_reply(conversation_id=c.id, submission_id=submission_id, content="hello", ttft_ms=4.0)
    if up is not None:
        verdicts.end_with_feedback(
            conversation_id=c.id, thumbs_up=up, text="meh" if not up else None
        )
    return c.id


def test_a_developer_reads_their_own_feedback_only(api: Api, deploy: Deploy) -> None:
    alice, bob = make_dev("alice"), make_dev("bob")
    sub = deploy("http://127.0.0.1:9", name="smol", developer="alice")
    talk(sub.id, consent=False, up=True)
    talk(sub.id, consent=False, up=False)
    c = talk(sub.id, consent=False, up=None)
    conv.add_reply(conversation_id=c, submission_id=sub.id, content="again", regenerated=True)
    with api.client(alice.key) as http:
        body = http.get(f"/submissions/{sub.id}/feedback").json()
    assert {k: body[k] for k in ("ratings", "thumbs_up", "thumbs_down", "retries")} == {
        "ratings": 2,
        "thumbs_up": 1,
        "thumbs_down": 1,
        "retries": 1,
    }
    assert [i["text"] for i in body["items"]] == ["meh", None]  # newest first
    with api.client(bob.key) as http:
        theirs = http.get(f"/submissions/{sub.id}/feedback")
        assert theirs.status_code == 404  # exactly as a missing one
        assert http.get("/submissions/nope/feedback").status_code == 404
        assert http.get(f"/submissions/{sub.id}/conversations").status_code == 404
    with api.client() as http:
        assert http.get(f"/submissions/{sub.id}/feedback").status_code == 401


def test_sampled_conversations_are_consented_and_anonymous(api: Api, deploy: Deploy) -> None:
    alice = make_dev("alice")
    sub = deploy("http://127.0.0.1:9", name="smol", developer="alice")
    shared = talk(sub.id, consent=True, up=False, text="I am at 10.0.0.7, mail a@b.co")
    talk(sub.id, consent=False, up=True)
    with api.client(alice.key) as http:
        resp = http.get(f"/submissions/{sub.id}/conversations", params={"limit": 5})
    body = resp.json()
    assert [c["conversation_id"] for c in body["conversations"]] == [shared]
    sample = body["conversations"][0]
    assert sample["thumbs_up"] is False and sample["feedback"] == "meh"
    assert [m["content"] for m in sample["messages"]] == ["I am at [ip], mail [email]", "hello"]
    stored = conv.require_conversation(conversation_id=shared)
    assert stored.user_hash not in resp.text and "user-7" not in resp.text


def test_the_leaderboard_is_empty_until_the_feedback_flow_writes_one(api: Api) -> None:
    dev = make_dev("carol")
    with api.client(dev.key) as http:
        assert http.get("/leaderboard").json() == {"created_at": None, "rows": [], "arena": []}
        with session_scope() as session:
            session.add(LeaderboardSnapshot(rows=[{"name": "smol", "score": 0.8}], arena=[]))
        body = http.get("/leaderboard").json()
    assert body["rows"] == [{"name": "smol", "score": 0.8}] and body["created_at"] is not None
    assert json.loads(json.dumps(body))  # plain JSON


def test_route_explains_the_next_choice(api: Api, deploy: Deploy, fake: ChatFakeServer) -> None:
    dev = make_dev("dana")
    a = deploy(fake.url, name="a", age_s=20)
    b = deploy(fake.url, name="b", age_s=10)
    with api.client(dev.key) as http:
        beta = http.get("/route").json()
        arena = http.get("/route", params={"mode": "arena"}).json()
        assert http.get("/route", params={"mode": "duel"}).status_code == 422
    assert beta["chosen"] == [b.id] and {c["name"] for c in beta["candidates"]} == {"a", "b"}
    assert arena["chosen"] == [b.id, a.id]
    assert availability.served_models()  # nothing was started by asking
    assert fake.requests_seen == 0
