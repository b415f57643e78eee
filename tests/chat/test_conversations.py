"""The chat side's reads and writes: one rating per conversation, scrubbed texts, health."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from paddock import availability, crud, verdicts
from paddock import conversations as conv
from paddock.errors import IllegalTransition, NotFound
from paddock.models import ConversationMode, Status
from tests.chat.conftest import Deploy, set_status


def test_turns_are_scrubbed_and_the_user_is_hashed(deploy: Deploy) -> None:
    sub = deploy("http://127.0.0.1:9", name="m")
    c = conv.start_conversation(mode=ConversationMode.beta, user_id="u-42", submission_id=sub.id)
    assert c.user_hash != "u-42" and len(c.user_hash) == 64
    conv.add_user_message(conversation_id=c.id, content="mail me at jane.doe@example.com")
    conv.add_reply(conversation_id=c.id, submission_id=sub.id, content="sure", ttft_ms=3.0)
    turns = conv.history(conversation_id=c.id)
    assert [(t.role, t.content) for t in turns] == [
        ("user", "mail me at [email]"),
        ("assistant", "sure"),
    ]


def test_regenerate_supersedes_the_last_reply_and_counts_as_a_retry(deploy: Deploy) -> None:
    sub = deploy("http://127.0.0.1:9")
    c = conv.start_conversation(mode=ConversationMode.beta, user_id="u", submission_id=sub.id)
    conv.add_user_message(conversation_id=c.id, content="hi")
    conv.add_reply(conversation_id=c.id, submission_id=sub.id, content="first")
    conv.add_user_message(conversation_id=c.id, content="again")
    conv.add_reply(conversation_id=c.id, submission_id=sub.id, content="second")
    conv.add_reply(conversation_id=c.id, submission_id=sub.id, content="third", regenerated=True)
    assert [t.content for t in conv.history(conversation_id=c.id)] == [
        "hi",
        "first",
        "again",
        "third",
    ]
    every = conv.messages_of(conversation_id=c.id)
    assert [m.content for m in every if m.superseded] == ["second"]
    assert conv.retry_count(submission_id=sub.id) == 1


def test_a_failed_reply_is_kept_but_not_shown_to_the_model(deploy: Deploy) -> None:
    sub = deploy("http://127.0.0.1:9")
    c = conv.start_conversation(mode=ConversationMode.beta, user_id="u", submission_id=sub.id)
    conv.add_user_message(conversation_id=c.id, content="hi")
    conv.add_reply(conversation_id=c.id, submission_id=sub.id, content="hal", error="broke")
    assert [t.content for t in conv.history(conversation_id=c.id)] == ["hi"]
    assert conv.last_reply(conversation_id=c.id) is None
    assert len(conv.messages_of(conversation_id=c.id)) == 2


def test_feedback_twice_is_refused_and_counted_once(deploy: Deploy) -> None:
    sub = deploy("http://127.0.0.1:9")
    c = conv.start_conversation(mode=ConversationMode.beta, user_id="u", submission_id=sub.id)
    fb = verdicts.end_with_feedback(conversation_id=c.id, thumbs_up=True, text="call 555-0100? no")
    assert fb.id is not None
    with pytest.raises(verdicts.AlreadyRated, match="already has its rating"):
        verdicts.end_with_feedback(conversation_id=c.id, thumbs_up=False, text=None)
    assert conv.feedback_counts(submission_ids=[sub.id])[sub.id] == (1, 1, 0)
    with pytest.raises(IllegalTransition, match="has ended"):
        conv.add_user_message(conversation_id=c.id, content="still there?")


def test_racing_ratings_store_exactly_one(deploy: Deploy) -> None:
    sub = deploy("http://127.0.0.1:9")
    c = conv.start_conversation(mode=ConversationMode.beta, user_id="u", submission_id=sub.id)

    def rate(up: bool) -> str:
        try:
            verdicts.end_with_feedback(conversation_id=c.id, thumbs_up=up, text=None)
        except verdicts.AlreadyRated:
            return "refused"
        return "stored"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(rate, [True, False] * 8))
    assert outcomes.count("stored") == 1
    assert len(conv.feedback_of(submission_id=sub.id)) == 1


def test_arena_is_voted_not_rated(deploy: Deploy) -> None:
    a, b = deploy("http://127.0.0.1:9", name="a"), deploy("http://127.0.0.1:9", name="b")
    c = conv.start_conversation(
        mode=ConversationMode.arena, user_id="u", submission_id=a.id, model_b_id=b.id
    )
    with pytest.raises(conv.WrongMode):
        verdicts.end_with_feedback(conversation_id=c.id, thumbs_up=True, text=None)
    battle = verdicts.record_battle(conversation_id=c.id, winner="model_b")
    assert (battle.model_a, battle.model_b, battle.winner) == (a.id, b.id, "model_b")
    with pytest.raises(verdicts.AlreadyRated):
        verdicts.record_battle(conversation_id=c.id, winner="tie")
    counts = conv.feedback_counts(submission_ids=[a.id, b.id])
    assert counts == {a.id: (0, 0, 1), b.id: (0, 0, 1)}
    beta = conv.start_conversation(mode=ConversationMode.beta, user_id="u", submission_id=a.id)
    with pytest.raises(conv.WrongMode):
        verdicts.record_battle(conversation_id=beta.id, winner="tie")


def test_samples_are_consented_and_show_only_the_models_side(deploy: Deploy) -> None:
    a, b = deploy("http://127.0.0.1:9", name="a"), deploy("http://127.0.0.1:9", name="b")
    shared = conv.start_conversation(
        mode=ConversationMode.arena, user_id="u", submission_id=a.id, model_b_id=b.id, consent=True
    )
    conv.add_user_message(conversation_id=shared.id, content="hello")
    conv.add_reply(conversation_id=shared.id, submission_id=a.id, content="from a", side="a")
    conv.add_reply(conversation_id=shared.id, submission_id=b.id, content="from b", side="b")
    private = conv.start_conversation(mode=ConversationMode.beta, user_id="u", submission_id=b.id)
    conv.add_user_message(conversation_id=private.id, content="secret")
    sampled = conv.sample_conversations(submission_id=b.id)
    assert [s.conversation.id for s in sampled] == [shared.id]
    assert [m.content for m in sampled[0].messages] == ["hello", "from b"]


def test_served_models_leave_out_torn_down_and_undeployed(deploy: Deploy) -> None:
    live = deploy("http://127.0.0.1:9", name="live")
    gone = deploy("http://127.0.0.1:9", name="gone")
    off = deploy("http://127.0.0.1:9", name="off")
    dep = crud.active_deployment(submission_id=gone.id)
    assert dep is not None and dep.id is not None
    crud.close_deployment(deployment_id=dep.id)
    set_status(off.id, Status.inactive)
    assert [s.submission.id for s in availability.served_models()] == [live.id]
    with pytest.raises(NotFound, match="not being served"):
        availability.require_served(submission_id=gone.id)


def test_health_is_an_upsert(deploy: Deploy) -> None:
    sub = deploy("http://127.0.0.1:9")
    assert availability.health_of(submission_ids=[sub.id]) == {}
    availability.mark_down(submission_id=sub.id, error="HTTP 500")
    availability.mark_down(submission_id=sub.id, error="no connection")
    row = availability.health_of(submission_ids=[sub.id])[sub.id]
    assert (row.healthy, row.error) == (False, "no connection")
    availability.mark_up(submission_id=sub.id)
    assert availability.health_of(submission_ids=[sub.id])[sub.id].healthy


def test_a_burst_of_ratings_shares_transactions_and_each_caller_gets_its_own_answer(
    deploy: Deploy,
) -> None:
    a, b = deploy("http://127.0.0.1:9", name="a"), deploy("http://127.0.0.1:9", name="b")
    ids = [
        conv.start_conversation(
            mode=ConversationMode.beta, user_id=f"u{i}", submission_id=(a if i % 2 else b).id
        ).id
        for i in range(60)
    ]
    arena = conv.start_conversation(
        mode=ConversationMode.arena, user_id="u", submission_id=a.id, model_b_id=b.id
    ).id
    asks = [(cid, i % 3 == 0) for i, cid in enumerate(ids)] * 2 + [("missing", True), (arena, True)]

    def rate(ask: tuple[str, bool]) -> str:
        try:
            fb = verdicts.end_with_feedback(conversation_id=ask[0], thumbs_up=ask[1], text="fine")
        except verdicts.AlreadyRated:
            return "again"
        except NotFound:
            return "missing"
        except conv.WrongMode:
            return "arena"
        assert fb.conversation_id == ask[0] and fb.thumbs_up is ask[1] and fb.id is not None
        return "stored"

    with ThreadPoolExecutor(32) as pool:
        outcomes = list(pool.map(rate, asks))
    assert outcomes.count("stored") == 60 and outcomes.count("again") == 60
    assert outcomes[-2:] == ["missing", "arena"]
    counts = conv.feedback_counts(submission_ids=[a.id, b.id])
    assert counts[a.id][0] + counts[b.id][0] == 60
    assert all(conv.require_conversation(conversation_id=c).ended_at for c in ids)
