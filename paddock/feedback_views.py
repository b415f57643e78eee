"""What a developer reads about their model's users: ratings, shared conversations, the board.

Each view is built here, once, as the API's response model, so `paddock feedback --json`
prints exactly what `GET /submissions/{id}/feedback` returns, whichever way it was fetched.
"""

from __future__ import annotations

from sqlmodel import col, select

from paddock import conversations, crud
from paddock.api.chat_schemas import (
    ConversationSamples,
    FeedbackItem,
    LeaderboardPublic,
    SampledConversationPublic,
    SampledMessage,
    SubmissionFeedback,
    utc,
)
from paddock.db import session_scope
from paddock.models import LeaderboardSnapshot, Submission
from paddock.submissions import require_owned

__all__ = ["submission_feedback", "conversation_samples", "leaderboard"]


def _submission(submission_id: str, developer: str | None) -> Submission:
    """A developer sees their own models only (another's is NotFound, as a missing one);
    without a developer — the operator, on the database — every model."""
    if developer is None:
        return crud.require_submission(submission_id=submission_id)
    return require_owned(submission_id=submission_id, developer=developer)


def submission_feedback(
    *, submission_id: str, developer: str | None, limit: int = 100
) -> SubmissionFeedback:
    """A model's ratings: counts, retries and the newest ratings with their text."""
    sub = _submission(submission_id, developer)
    ratings, ups, votes = conversations.feedback_counts(submission_ids=[sub.id])[sub.id]
    items = [
        FeedbackItem(
            conversation_id=fb.conversation_id,
            user=fb.user_hash,
            thumbs_up=fb.thumbs_up,
            text=fb.text,
            category=fb.category,
            created_at=utc(fb.created_at),
        )
        for fb in conversations.feedback_of(submission_id=sub.id, limit=limit)
    ]
    return SubmissionFeedback(
        submission_id=sub.id,
        name=sub.display_name,
        ratings=ratings,
        thumbs_up=ups,
        thumbs_down=ratings - ups,
        arena_votes=votes,
        retries=conversations.retry_count(submission_id=sub.id),
        items=items,
    )


def conversation_samples(
    *, submission_id: str, developer: str | None, limit: int = 10
) -> ConversationSamples:
    """A random sample of shared conversations: scrubbed texts, no user ids, this model's
    side of an arena only."""
    sub = _submission(submission_id, developer)
    out = []
    for s in conversations.sample_conversations(submission_id=sub.id, limit=limit):
        out.append(
            SampledConversationPublic(
                conversation_id=s.conversation.id,
                mode=s.conversation.mode.value,
                created_at=utc(s.conversation.created_at),
                thumbs_up=s.feedback.thumbs_up if s.feedback else None,
                feedback=s.feedback.text if s.feedback else None,
                messages=[
                    SampledMessage(
                        role=m.role,
                        content=m.content,
                        regenerated=m.regenerated,
                        superseded=m.superseded,
                        error=m.error,
                        ttft_ms=m.ttft_ms,
                        latency_ms=m.latency_ms,
                        output_tokens=m.output_tokens,
                    )
                    for m in s.messages
                ],
            )
        )
    return ConversationSamples(submission_id=sub.id, conversations=out)


def leaderboard() -> LeaderboardPublic:
    """The newest snapshot the feedback flow wrote; empty until it has run once."""
    with session_scope() as session:
        snap = session.exec(
            select(LeaderboardSnapshot).order_by(
                col(LeaderboardSnapshot.created_at).desc(), col(LeaderboardSnapshot.id).desc()
            )
        ).first()
    if snap is None:
        return LeaderboardPublic(created_at=None, rows=[], arena=[])
    return LeaderboardPublic(
        created_at=utc(snap.created_at), rows=list(snap.rows), arena=list(snap.arena)
    )
