"""The leaderboard: what users' feedback says about each model, computed from the tables.

Computed by the feedback flow on a schedule and stored as a `LeaderboardSnapshot`, so the
API and the CLI read it rather than refit Bradley-Terry per request. A model appears once
it has had a conversation; it is ranked only past a minimum count of counted votes (one
per user per model, the latest), since a lucky start must not put a model on top.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict
from sqlmodel import col, select

from paddock import ratings
from paddock.categorize import categorize
from paddock.db import session_scope
from paddock.models import (
    Battle,
    Conversation,
    Feedback,
    LeaderboardSnapshot,
    Message,
    Submission,
)

__all__ = ["LeaderboardRow", "ArenaRow", "categorize_new_feedback", "compute", "store"]


class LeaderboardRow(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rank: int | None  # None: shown, but fewer counted votes than the minimum
    submission_id: str
    name: str
    developer: str
    status: str
    votes: int  # counted: one per user, their latest
    thumbs_up: int
    ratio: float
    wilson_lower: float
    wilson_upper: float
    conversations: int
    mean_turns: float  # user messages per conversation
    retry_rate: float  # regenerated replies / replies
    repetition: float  # mean Jaccard of consecutive replies (0 = never repeats)
    categories: dict[str, int]


class ArenaRow(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rank: int | None
    submission_id: str
    name: str
    rating: float  # Elo scale: 400·log10-odds + 1000
    lower: float  # 95 % bootstrap interval
    upper: float
    battles: int


def categorize_new_feedback() -> int:
    """Give every feedback text without a category one; returns how many were given."""
    with session_scope() as session:
        pending = list(
            session.exec(
                select(Feedback).where(
                    col(Feedback.category).is_(None),
                    col(Feedback.text).is_not(None),
                    col(Feedback.text) != "",
                )
            )
        )
        if not pending:
            return 0
        for row, category in zip(pending, categorize([f.text or "" for f in pending]), strict=True):
            row.category = category
            session.add(row)
    return len(pending)


def compute(
    *, min_votes: int = ratings.MIN_COUNT, bootstrap_rounds: int = 1000
) -> tuple[list[LeaderboardRow], list[ArenaRow]]:
    """The thumbs leaderboard and the arena ratings, best first."""
    with session_scope() as session:
        subs = {s.id: s for s in session.exec(select(Submission))}
        feedback = list(session.exec(select(Feedback)))
        conversations = list(session.exec(select(Conversation)))
        messages = list(session.exec(select(Message).order_by(col(Message.id))))
        battles = list(session.exec(select(Battle)))
    rows = _thumbs_rows(subs, feedback, conversations, messages, min_votes)
    return rows, _arena_rows(subs, battles, min_votes, bootstrap_rounds)


def store(rows: Sequence[LeaderboardRow], arena: Sequence[ArenaRow]) -> LeaderboardSnapshot:
    snapshot = LeaderboardSnapshot(
        rows=[r.model_dump(mode="json") for r in rows],
        arena=[a.model_dump(mode="json") for a in arena],
    )
    with session_scope() as session:
        session.add(snapshot)
    return snapshot


def _thumbs_rows(
    subs: dict[str, Submission],
    feedback: list[Feedback],
    conversations: list[Conversation],
    messages: list[Message],
    min_votes: int,
) -> list[LeaderboardRow]:
    votes: list[tuple[str, str, bool, datetime]] = [
        (f.user_hash, f.submission_id, f.thumbs_up, f.created_at) for f in feedback
    ]
    stats = ratings.thumbs_up_stats(votes)
    categories: dict[str, Counter[str]] = defaultdict(Counter)
    for f in feedback:
        if f.category:
            categories[f.submission_id][f.category] += 1
    convs_of: dict[str, list[str]] = defaultdict(list)
    for c in conversations:
        convs_of[c.submission_id].append(c.id)
        if c.model_b_id:
            convs_of[c.model_b_id].append(c.id)
    by_conv: dict[str, list[Message]] = defaultdict(list)
    for m in messages:
        by_conv[m.conversation_id].append(m)

    rows = []
    for sid, conv_ids in convs_of.items():
        sub = subs.get(sid)
        if sub is None:
            continue
        turns, replies, regenerated, repeats = 0, 0, 0, []
        for cid in conv_ids:
            turns += sum(1 for m in by_conv[cid] if m.role == "user")
            mine = [m for m in by_conv[cid] if m.role == "assistant" and m.submission_id == sid]
            replies += len(mine)
            regenerated += sum(1 for m in mine if m.regenerated)
            kept = [m.content for m in mine if not m.superseded and not m.error]
            if len(kept) >= 2:
                repeats.append(ratings.repetition(kept))
        s = stats.get(sid)
        rows.append(
            LeaderboardRow(
                rank=None,
                submission_id=sid,
                name=sub.display_name,
                developer=sub.developer,
                status=str(sub.status),
                votes=s.n if s else 0,
                thumbs_up=s.up if s else 0,
                ratio=round(s.ratio, 4) if s else 0.0,
                wilson_lower=round(s.lower, 4) if s else 0.0,
                wilson_upper=round(s.upper, 4) if s else 0.0,
                conversations=len(conv_ids),
                mean_turns=round(turns / len(conv_ids), 3),
                retry_rate=round(regenerated / replies, 4) if replies else 0.0,
                repetition=round(sum(repeats) / len(repeats), 4) if repeats else 0.0,
                categories=dict(categories[sid]),
            )
        )
    # Ranked by the interval's lower bound: a share is only as good as the evidence for it.
    ranks = ratings.rank(
        {r.submission_id: r.wilson_lower for r in rows},
        {r.submission_id: r.votes for r in rows},
        min_count=min_votes,
    )
    rows = [r.model_copy(update={"rank": ranks[r.submission_id]}) for r in rows]
    return sorted(rows, key=lambda r: (r.rank is None, r.rank or 0, -r.wilson_lower, r.name))


def _arena_rows(
    subs: dict[str, Submission], battles: list[Battle], min_count: int, rounds: int
) -> list[ArenaRow]:
    if not battles:
        return []
    triples = [(b.model_a, b.model_b, b.winner) for b in battles if b.model_a != b.model_b]
    if not triples:
        return []
    intervals = ratings.bootstrap_intervals(triples, rounds=rounds)
    fought: Counter[str] = Counter()
    for a, b, _ in triples:
        fought[a] += 1
        fought[b] += 1
    ranks = ratings.rank(
        {m: iv.rating for m, iv in intervals.items()}, dict(fought), min_count=min_count
    )
    return [
        ArenaRow(
            rank=ranks[m],
            submission_id=m,
            name=subs[m].display_name if m in subs else m,
            rating=round(iv.rating, 1),
            lower=round(iv.lower, 1),
            upper=round(iv.upper, 1),
            battles=fought[m],
        )
        for m, iv in intervals.items()
    ]
