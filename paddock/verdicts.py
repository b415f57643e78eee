"""A user's verdict on a conversation — thumbs and text, or an arena vote — stored once.

A conversation takes one rating, however it arrives: a double click, a retry or two
processes at the same moment all end in one stored row and `AlreadyRated` for the rest
(a unique constraint decides, not a read). Texts are scrubbed here, so no caller can
forget to; an accepted rating is committed before the function returns.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select as sa_select
from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel, col

from paddock import privacy
from paddock.conversations import WrongMode
from paddock.db import session_scope
from paddock.errors import IllegalTransition, NotFound, Rejected, TransientError
from paddock.models import Battle, Conversation, ConversationMode, Feedback, utcnow

__all__ = ["AlreadyRated", "VOTES", "end_with_feedback", "record_battle"]

VOTES = ("model_a", "model_b", "tie", "tie (bothbad)")

log = logging.getLogger(__name__)


class AlreadyRated(IllegalTransition):
    """A conversation takes one rating; a second one (a double click, a retry) is refused."""


def end_with_feedback(*, conversation_id: str, thumbs_up: bool, text: str | None) -> Feedback:
    """Rate a conversation and end it; a second rating is refused (`AlreadyRated`), even
    when two arrive at the same moment from different processes (the unique constraint).

    Ratings arrive in bursts (a chat app's users finishing at once), so concurrent calls
    share one transaction — a group commit: whoever finds no write under way writes
    every rating waiting, and each caller returns once the transaction holding its rating
    has committed. One fsync then serves many ratings instead of one.
    """
    pending = _Rating(conversation_id, thumbs_up, privacy.scrub(text) if text else None)
    _ratings.submit(pending)
    if pending.error is not None:
        raise pending.error
    assert pending.result is not None
    return pending.result


@dataclass(slots=True)
class _Rating:
    conversation_id: str
    thumbs_up: bool
    text: str | None
    result: Feedback | None = None
    error: Exception | None = None
    done: bool = False
    wake: threading.Event = field(default_factory=threading.Event)


class _GroupCommit:
    """Writes whatever is queued in one transaction; callers wait for their own batch.

    One caller at a time leads: it takes the queue, writes it, wakes the callers it wrote
    for, and hands the lead to the first caller still waiting (each waiter has its own
    event, so a batch wakes exactly the callers it served, not every waiting thread).
    """

    def __init__(self, write: Callable[[list[_Rating]], None], max_batch: int = 256) -> None:
        self._write = write
        self._max = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Rating] = []
        self._writing = False

    def submit(self, item: _Rating) -> None:
        with self._lock:
            self._queue.append(item)
            lead = not self._writing
            self._writing = True
        if not lead:
            item.wake.wait()
            if item.done:
                return
        while True:  # leading: write batches until this caller's rating is among them
            with self._lock:
                batch = self._queue[: self._max]
                del self._queue[: self._max]
            self._run(batch)
            with self._lock:
                if not self._queue:
                    self._writing = False
                    return
                if item.done:
                    self._queue[0].wake.set()  # the next waiter leads; done stays False
                    return

    def _run(self, batch: list[_Rating]) -> None:
        try:
            self._write(batch)
        except Exception as exc:
            log.exception("writing %d ratings failed", len(batch))
            for it in batch:
                failed = TransientError(
                    f"the rating could not be stored ({type(exc).__name__}); try again"
                )
                failed.__cause__ = exc
                it.error = failed
        for it in batch:
            it.done = True
            it.wake.set()


def _write_ratings(batch: list[_Rating]) -> None:
    """One transaction for a batch: one read of the conversations, one multi-row insert
    that skips conversations rated meanwhile (by another process), one update."""
    now = utcnow()
    ids = list({r.conversation_id for r in batch})
    outcome: dict[int, Exception] = {}
    rows: list[dict[str, Any]] = []
    with session_scope() as session:
        found = {
            row.id: row
            for row in session.execute(
                sa_select(
                    col(Conversation.id),
                    col(Conversation.mode),
                    col(Conversation.submission_id),
                    col(Conversation.user_hash),
                    col(Conversation.ended_at),
                ).where(col(Conversation.id).in_(ids))
            )
        }
        claimed: set[str] = set()
        for i, r in enumerate(batch):
            conv = found.get(r.conversation_id)
            if conv is None:
                outcome[i] = NotFound(f"no conversation {r.conversation_id!r}")
            elif conv.mode == ConversationMode.arena:
                outcome[i] = WrongMode("an arena conversation is rated by a vote, not thumbs")
            elif conv.ended_at is not None or r.conversation_id in claimed:
                outcome[i] = _already(r.conversation_id)
            else:
                claimed.add(r.conversation_id)
                rows.append(
                    {
                        "conversation_id": r.conversation_id,
                        "submission_id": conv.submission_id,
                        "user_hash": conv.user_hash,
                        "thumbs_up": r.thumbs_up,
                        "text": r.text,
                        "created_at": now,
                    }
                )
        inserted: dict[str, int] = {}
        if rows:
            dialect = session.get_bind().dialect.name
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            table = SQLModel.metadata.tables[Feedback.__tablename__]  # Core: no ORM objects
            stmt = (
                insert(table)
                .on_conflict_do_nothing(index_elements=["conversation_id"])
                .returning(table.c.id, table.c.conversation_id)
            )
            # One statement compiled once; the driver sends the rows as multi-row VALUES.
            inserted = {cid: fid for fid, cid in session.connection().execute(stmt, rows)}
            if inserted:
                session.execute(
                    update(Conversation)
                    .where(col(Conversation.id).in_(list(inserted)))
                    .values(ended_at=now)
                )
    by_conversation = {row["conversation_id"]: row for row in rows}
    for i, r in enumerate(batch):
        if i in outcome:
            r.error = outcome[i]
        elif r.conversation_id in inserted:  # a batch's duplicates are refused above
            # Built without validation: the row was just stored from validated values.
            r.result = Feedback.model_construct(
                id=inserted[r.conversation_id], **by_conversation[r.conversation_id]
            )
        else:
            r.error = _already(r.conversation_id)


def _already(conversation_id: str) -> AlreadyRated:
    return AlreadyRated(
        f"conversation {conversation_id!r} already has its rating; one per conversation"
    )


_ratings = _GroupCommit(_write_ratings)


def record_battle(*, conversation_id: str, winner: str) -> Battle:
    if winner not in VOTES:
        raise Rejected(f"a vote is one of {', '.join(VOTES)}; got {winner!r}")
    try:
        with session_scope() as session:
            conv = session.get(Conversation, conversation_id)
            if conv is None:
                raise NotFound(f"no conversation {conversation_id!r}")
            if conv.mode != ConversationMode.arena or conv.model_b_id is None:
                raise WrongMode("only an arena conversation takes a vote; rate this one instead")
            battle = Battle(
                conversation_id=conversation_id,
                model_a=conv.submission_id,
                model_b=conv.model_b_id,
                winner=winner,
                user_hash=conv.user_hash,
            )
            conv.ended_at = utcnow()
            session.add(battle)
            session.add(conv)
            session.flush()
    except IntegrityError as exc:
        raise AlreadyRated(
            f"conversation {conversation_id!r} already has its vote; one per conversation"
        ) from exc
    return battle
