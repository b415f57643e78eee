"""Reads and writes for the chat side: conversations and their turns.

Same habits as `crud`: keyword-only functions, one short session each, and every write
that is accepted is committed before the function returns (so a 2xx means it is stored).
Nothing here stores a user id or a raw text: ids go through `privacy.hash_user` and texts
through `privacy.scrub` inside these functions, so no caller can forget to.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, cast, exists, func, or_, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from paddock import privacy
from paddock.db import session_scope
from paddock.errors import IllegalTransition, NotFound, Rejected
from paddock.models import (
    Battle,
    Conversation,
    ConversationMode,
    Feedback,
    Message,
    new_id,
)

__all__ = [
    "WrongMode",
    "start_conversation",
    "get_conversation",
    "require_conversation",
    "add_user_message",
    "add_reply",
    "history",
    "last_reply",
    "feedback_of",
    "feedback_counts",
    "retry_count",
    "SampledConversation",
    "sample_conversations",
    "messages_of",
    "consented_prompts",
]

log = logging.getLogger(__name__)


class WrongMode(Rejected):
    """An action that belongs to another kind of conversation (a vote outside an arena)."""


# --------------------------------------------------------------------------- conversations


def start_conversation(
    *,
    mode: ConversationMode,
    user_id: str,
    submission_id: str,
    model_b_id: str | None = None,
    consent: bool = False,
    route: dict[str, Any] | None = None,
    turns: Sequence[tuple[str, str]] = (),
    conversation_id: str | None = None,
) -> Conversation:
    """Store a new conversation, with ``turns`` (role, text) that came with its first
    request (an OpenAI-style client sends its history) in the same transaction; their
    replies were not written here, so they carry no model. ``conversation_id`` lets a
    caller hand the id out before the row is written."""
    if (mode == ConversationMode.arena) != (model_b_id is not None):
        raise ValueError("an arena conversation has two models; the other modes have one")
    conv = Conversation(
        id=conversation_id or new_id(),
        mode=mode,
        user_hash=privacy.hash_user(user_id),
        submission_id=submission_id,
        model_b_id=model_b_id,
        consent=consent,
        route=route or {},
    )
    with session_scope() as session:
        session.add(conv)
        session.flush()  # the conversation row first: the turns refer to it
        for role, text in turns:
            role = "user" if role == "user" else "assistant"
            session.add(Message(conversation_id=conv.id, role=role, content=privacy.scrub(text)))
    return conv


def get_conversation(*, conversation_id: str) -> Conversation | None:
    with session_scope() as session:
        return session.get(Conversation, conversation_id)


def require_conversation(*, conversation_id: str) -> Conversation:
    conv = get_conversation(conversation_id=conversation_id)
    if conv is None:
        raise NotFound(f"no conversation {conversation_id!r}; start one first")
    return conv


def _open(session: Session, conversation_id: str) -> Conversation:
    conv = session.get(Conversation, conversation_id)
    if conv is None:
        raise NotFound(f"no conversation {conversation_id!r}; start one first")
    if conv.ended_at is not None:
        raise IllegalTransition(
            f"conversation {conversation_id!r} has ended (it was rated); start a new one"
        )
    return conv


def add_user_message(*, conversation_id: str, content: str) -> Message:
    with session_scope() as session:
        _open(session, conversation_id)
        msg = Message(conversation_id=conversation_id, role="user", content=privacy.scrub(content))
        session.add(msg)
    return msg


def add_reply(
    *,
    conversation_id: str,
    submission_id: str | None,
    content: str,
    side: str | None = None,
    ttft_ms: float | None = None,
    latency_ms: float | None = None,
    output_tokens: int | None = None,
    error: str | None = None,
    regenerated: bool = False,
) -> Message:
    """Store a model's reply (or its failed attempt, with ``error``; or, without a
    ``submission_id``, an earlier reply an OpenAI-style client sent as context).

    With ``regenerated`` the reply it replaces is marked superseded in the same
    transaction, so a conversation never shows two live answers to one message, nor none
    because a regeneration failed half-way (a failed one supersedes nothing).
    """
    with session_scope() as session:
        _open(session, conversation_id)
        if regenerated and error is None:
            session.execute(
                update(Message)
                .where(col(Message.conversation_id) == conversation_id)
                .where(col(Message.role) == "assistant")
                .where(col(Message.side).is_(None) if side is None else col(Message.side) == side)
                .where(col(Message.superseded).is_(False))
                .where(col(Message.id) > _last_user_id(session, conversation_id))
                .values(superseded=True)
            )
        msg = Message(
            conversation_id=conversation_id,
            role="assistant",
            content=privacy.scrub(content),
            submission_id=submission_id,
            side=side,
            regenerated=regenerated,
            ttft_ms=ttft_ms,
            latency_ms=latency_ms,
            output_tokens=output_tokens,
            error=error,
        )
        session.add(msg)
    return msg


def _last_user_id(session: Session, conversation_id: str) -> int:
    last = session.exec(
        select(func.max(Message.id)).where(
            Message.conversation_id == conversation_id, Message.role == "user"
        )
    ).one()
    return int(last or 0)


def history(*, conversation_id: str, side: str | None = None) -> list[Message]:
    """The turns a model sees: user messages and the live, successful replies of one side."""
    with session_scope() as session:
        query = (
            select(Message)
            .where(Message.conversation_id == conversation_id)
            .where(col(Message.superseded).is_(False), col(Message.error).is_(None))
            .order_by(col(Message.id))
        )
        if side is not None:
            query = query.where(or_(col(Message.role) == "user", col(Message.side) == side))
        return list(session.exec(query))


def last_reply(*, conversation_id: str, side: str | None = None) -> Message | None:
    """The live reply to the newest user message, if there is one."""
    turns = history(conversation_id=conversation_id, side=side)
    return turns[-1] if turns and turns[-1].role == "assistant" else None


def messages_of(*, conversation_id: str) -> list[Message]:
    with session_scope() as session:
        return list(
            session.exec(
                select(Message)
                .where(Message.conversation_id == conversation_id)
                .order_by(col(Message.id))
            )
        )


def feedback_of(*, submission_id: str, limit: int = 100) -> list[Feedback]:
    with session_scope() as session:
        return list(
            session.exec(
                select(Feedback)
                .where(Feedback.submission_id == submission_id)
                .order_by(col(Feedback.created_at).desc(), col(Feedback.id).desc())
                .limit(limit)
            )
        )


def feedback_counts(*, submission_ids: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """(ratings, thumbs up, arena votes taken part in) per submission, zeros included."""
    out = {sid: (0, 0, 0) for sid in submission_ids}
    if not out:
        return out
    with session_scope() as session:
        rows = session.exec(
            select(
                Feedback.submission_id,
                func.count(),
                func.sum(cast(col(Feedback.thumbs_up), Integer)),
            )
            .where(col(Feedback.submission_id).in_(out))
            .group_by(Feedback.submission_id)
        ).all()
        for sid, n, ups in rows:
            out[sid] = (int(n), int(ups or 0), 0)
        for column in (Battle.model_a, Battle.model_b):
            for sid, n in session.exec(
                select(column, func.count()).where(col(column).in_(out)).group_by(column)
            ).all():
                total, ups, votes = out[sid]
                out[sid] = (total, ups, votes + int(n))
    return out


def retry_count(*, submission_id: str) -> int:
    """How often users asked this model for another answer (regenerated replies)."""
    with session_scope() as session:
        return int(
            session.exec(
                select(func.count())
                .select_from(Message)
                .where(Message.submission_id == submission_id)
                .where(col(Message.regenerated).is_(True))
            ).one()
        )


@dataclass(frozen=True, slots=True)
class SampledConversation:
    conversation: Conversation
    messages: list[Message]
    feedback: Feedback | None


def sample_conversations(*, submission_id: str, limit: int = 10) -> list[SampledConversation]:
    """A random sample of the conversations users agreed to share, with this model's side
    only (an arena's other model is someone else's)."""
    with session_scope() as session:
        convs = list(
            session.exec(
                select(Conversation)
                .where(
                    or_(
                        col(Conversation.submission_id) == submission_id,
                        col(Conversation.model_b_id) == submission_id,
                    )
                )
                .where(col(Conversation.consent).is_(True))
                .order_by(func.random())
                .limit(limit)
            )
        )
        out = []
        for conv in convs:
            side = None
            if conv.mode == ConversationMode.arena:
                side = "a" if conv.submission_id == submission_id else "b"
            query = (
                select(Message).where(Message.conversation_id == conv.id).order_by(col(Message.id))
            )
            if side is not None:
                query = query.where(or_(col(Message.role) == "user", col(Message.side) == side))
            fb = session.exec(select(Feedback).where(Feedback.conversation_id == conv.id)).first()
            out.append(SampledConversation(conv, list(session.exec(query)), fb))
    out.sort(key=lambda s: s.conversation.created_at)
    return out


def consented_prompts(
    *, limit: int, seed: int = 0, submission_id: str | None = None
) -> list[list[dict[str, str]]]:
    """Up to ``limit`` requests as users really sent them, for a stress test: a user turn
    of a conversation its user agreed to share, with the turns before it as the model saw
    them (user turns and one side's live, successful replies), as role/content messages.

    Drawn with ``seed`` from the newest shared conversations — today's traffic is the one
    to measure, and the same database and seed give the same prompts, so a retried stress
    run sends what the first attempt sent. With ``submission_id``, that model's
    conversations only (its side of an arena). Texts were scrubbed when stored and no user
    id is read, so nothing here needs anonymizing.
    """
    if limit <= 0:
        return []
    rng = random.Random(seed)
    has_user_turn = exists().where(
        col(Message.conversation_id) == col(Conversation.id), col(Message.role) == "user"
    )
    query = (
        sa_select(
            col(Conversation.id),
            col(Conversation.mode),
            col(Conversation.submission_id),
            col(Conversation.model_b_id),
        )
        .where(col(Conversation.consent).is_(True))
        .where(has_user_turn)
        .order_by(col(Conversation.created_at).desc(), col(Conversation.id).desc())
        .limit(limit * 4)  # a pool to draw from: each conversation gives one prompt or more
    )
    if submission_id is not None:
        query = query.where(
            or_(
                col(Conversation.submission_id) == submission_id,
                col(Conversation.model_b_id) == submission_id,
            )
        )
    with session_scope() as session:
        pool = list(session.execute(query))
        rng.shuffle(pool)
        chosen = pool[:limit]  # at least one prompt each: enough conversations for `limit`
        sides: dict[str, str | None] = {}
        for row in chosen:
            if row.mode != ConversationMode.arena:
                sides[row.id] = None
            elif submission_id is not None:
                sides[row.id] = "a" if row.submission_id == submission_id else "b"
            else:
                sides[row.id] = rng.choice(("a", "b"))
        rows = session.execute(
            sa_select(
                col(Message.conversation_id),
                col(Message.role),
                col(Message.content),
                col(Message.side),
            )
            .where(col(Message.conversation_id).in_(list(sides)))
            .where(col(Message.superseded).is_(False), col(Message.error).is_(None))
            .order_by(col(Message.id))
        ).all()
    turns: dict[str, list[dict[str, str]]] = {cid: [] for cid in sides}
    prompts: list[list[dict[str, str]]] = []
    for cid, role, content, side in rows:
        if role != "user" and sides[cid] is not None and side != sides[cid]:
            continue  # the other model's reply: this side never saw it
        seen = turns[cid]
        seen.append({"role": "user" if role == "user" else "assistant", "content": content})
        if role == "user":
            prompts.append(list(seen))
    rng.shuffle(prompts)
    return prompts[:limit]
