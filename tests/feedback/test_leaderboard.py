"""The feedback flow on real tables: categories given once, one counted vote per user per
model, a minimum count before ranking, retry rate and repetition, arena ratings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlmodel import select

from flows.feedback import feedback
from paddock import conversations as convs
from paddock import crud, lifecycle, verdicts
from paddock.config import reset_settings
from paddock.db import session_scope
from paddock.feedback_views import leaderboard
from paddock.models import ConversationMode, Feedback, LeaderboardSnapshot

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _deployed(name: str) -> str:
    sid = crud.create_submission(developer="dev", source=f"org/{name}", display_name=name).id
    for status in lifecycle.PIPELINE[1:]:
        lifecycle.transition(sid, status)
    return sid


def _chat(sid: str, user: str, replies: list[str], thumbs_up: bool, text: str | None) -> str:
    conv = convs.start_conversation(mode=ConversationMode.beta, user_id=user, submission_id=sid)
    for reply in replies:
        convs.add_user_message(conversation_id=conv.id, content="tell me more")
        convs.add_reply(conversation_id=conv.id, submission_id=sid, content=reply)
    verdicts.end_with_feedback(conversation_id=conv.id, thumbs_up=thumbs_up, text=text)
    return conv.id


@pytest.fixture
def min_votes(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setenv("PADDOCK_LEADERBOARD_MIN_VOTES", "2")
    monkeypatch.setenv("PADDOCK_LEADERBOARD_BOOTSTRAP_ROUNDS", "50")
    reset_settings()
    yield 2
    reset_settings()


def test_the_flow_categorizes_and_ranks(min_votes: int) -> None:
    good, bad, new = _deployed("lb-good"), _deployed("lb-bad"), _deployed("lb-new")
    _chat(good, "u1", ["The sea is wide.", "Storms gather."], True, "Lovely, a great answer!")
    _chat(good, "u2", ["Hello."], True, None)
    # u3 votes on `bad` twice: only the later vote counts.
    _chat(bad, "u3", ["ok ok ok", "ok ok ok"], True, None)
    _chat(bad, "u3", ["ok ok ok"], False, "it keeps repeating the same words over and over")
    _chat(bad, "u4", ["no"], False, "Way too short.")
    conv = _chat(new, "u5", ["Hi!"], False, None)
    arena = convs.start_conversation(
        mode=ConversationMode.arena, user_id="u6", submission_id=good, model_b_id=bad
    )
    verdicts.record_battle(conversation_id=arena.id, winner="model_a")

    snapshot_id = feedback()

    with session_scope() as session:
        texts = {f.text: f.category for f in session.exec(select(Feedback))}
        snapshot = session.get(LeaderboardSnapshot, snapshot_id)
    assert texts["Lovely, a great answer!"] == "praise"
    assert all(category for text, category in texts.items() if text)
    assert snapshot is not None
    rows = {r["name"]: r for r in snapshot.rows}
    assert rows["lb-good"]["rank"] == 1 and rows["lb-good"]["votes"] == 2
    assert rows["lb-bad"]["votes"] == 2 and rows["lb-bad"]["thumbs_up"] == 0  # u3 counted once
    assert rows["lb-bad"]["rank"] == 2
    assert rows["lb-new"]["rank"] is None and rows["lb-new"]["votes"] == 1  # below minimum
    assert rows["lb-bad"]["repetition"] == 1.0 and rows["lb-good"]["repetition"] < 0.5
    assert rows["lb-good"]["conversations"] == 3  # two beta chats and the arena
    assert rows["lb-good"]["mean_turns"] == 1.0
    assert {a["name"] for a in snapshot.arena} == {"lb-good", "lb-bad"}
    assert snapshot.arena[0]["name"] == "lb-good"
    assert leaderboard().rows == snapshot.rows  # what the API and CLI read
    assert conv


def test_a_second_run_recategorizes_nothing(min_votes: int) -> None:
    from paddock.leaderboard import categorize_new_feedback

    sid = _deployed("lb-once")
    _chat(sid, "u7", ["Hi"], False, "incoherent rambling that makes no sense at all")
    assert categorize_new_feedback() >= 1
    assert categorize_new_feedback() == 0
