"""The facts the planners decide on, read from the tables and the store.

Planners are pure functions of these frozen records, so a dry run is the plan alone and
a test can hand a planner any situation. Appliers read one submission's facts again
(`read_one`) just before acting, because the plan may be minutes old.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func
from sqlmodel import Session, col, select

from paddock import bundles
from paddock.db import session_scope
from paddock.models import (
    Conversation,
    Deployment,
    Message,
    StageRun,
    StageStatus,
    Status,
    Submission,
)
from paddock.storage import Store

from .parking import survey

__all__ = [
    "SubmissionFacts",
    "DeploymentFacts",
    "Tables",
    "StoreFacts",
    "read_tables",
    "read_one",
    "read_store",
    "latest",
]


@dataclass(frozen=True)
class SubmissionFacts:
    id: str
    developer: str
    name: str
    status: Status
    created_at: datetime
    updated_at: datetime
    endpoint: str | None = None
    last_chat: datetime | None = None  # the newest message of any of its conversations
    last_stage: datetime | None = None  # the newest start or end of one of its stage runs
    running_stage: str | None = None  # the stage of its newest stage run still running


@dataclass(frozen=True)
class DeploymentFacts:
    id: int
    submission_id: str
    backend: str
    endpoint: str | None
    created_at: datetime
    parkable: bool = False  # its backend may scale it to zero (see `parking`)
    parked: bool = False  # it is at zero replicas now


@dataclass(frozen=True)
class Tables:
    submissions: dict[str, SubmissionFacts]
    deployments: list[DeploymentFacts]  # the active ones


@dataclass(frozen=True)
class StoreFacts:
    live: frozenset[str]  # digests complete in the store's live place
    archived: dict[str, datetime] = field(default_factory=dict)  # digest → archived at


def _utc(moment: datetime | None) -> datetime | None:
    # Stored timestamps come back naive (SQLite, Postgres `timestamp`); they are UTC.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def latest(*moments: datetime | None) -> datetime | None:
    present = [m for m in moments if m is not None]
    return max(present) if present else None


def _chat_times(session: Session, only: str | None = None) -> dict[str, datetime]:
    """Per submission, its newest message: the replies it wrote and the user turns of
    conversations it took part in (as model A or B)."""
    newest = func.max(Message.created_at)
    by_reply = select(Message.submission_id, newest).group_by(col(Message.submission_id))
    joined = (col(Message.conversation_id) == col(Conversation.id),)
    by_a = (
        select(Conversation.submission_id, newest)
        .join(Message, *joined)
        .group_by(col(Conversation.submission_id))
    )
    by_b = (
        select(Conversation.model_b_id, newest)
        .join(Message, *joined)
        .group_by(col(Conversation.model_b_id))
    )
    if only is not None:
        by_reply = by_reply.where(col(Message.submission_id) == only)
        by_a = by_a.where(col(Conversation.submission_id) == only)
        by_b = by_b.where(col(Conversation.model_b_id) == only)
    times: dict[str, datetime] = {}
    for query in (by_reply, by_a, by_b):
        for sid, moment in session.exec(query).all():
            at = _utc(moment)
            if sid is not None and at is not None:
                times[sid] = latest(times.get(sid), at) or at
    return times


def _stage_times(
    session: Session, only: str | None = None
) -> dict[str, tuple[datetime | None, str | None]]:
    """Per submission, its newest stage-run activity and the stage still running, if any."""
    query = select(StageRun).order_by(col(StageRun.id))
    if only is not None:
        query = query.where(col(StageRun.submission_id) == only)
    out: dict[str, tuple[datetime | None, str | None]] = {}
    for run in session.exec(query):
        seen, running = out.get(run.submission_id, (None, None))
        seen = latest(seen, _utc(run.started_at), _utc(run.ended_at))
        if run.status is StageStatus.running:
            running = run.stage
        out[run.submission_id] = (seen, running)
    return out


def _facts(
    sub: Submission,
    chats: dict[str, datetime],
    stages: dict[str, tuple[datetime | None, str | None]],
) -> SubmissionFacts:
    last_stage, running = stages.get(sub.id, (None, None))
    return SubmissionFacts(
        id=sub.id,
        developer=sub.developer,
        name=sub.display_name,
        status=Status(sub.status),
        created_at=_utc(sub.created_at) or sub.created_at,
        updated_at=_utc(sub.updated_at) or sub.updated_at,
        endpoint=sub.endpoint,
        last_chat=chats.get(sub.id),
        last_stage=last_stage,
        running_stage=running,
    )


def read_tables() -> Tables:
    """Everything the planners decide on: the tables read in one session, then what the
    backends say about parking the active deployments."""
    with session_scope() as session:
        chats = _chat_times(session)
        stages = _stage_times(session)
        subs = {s.id: _facts(s, chats, stages) for s in session.exec(select(Submission))}
        rows = [
            d
            for d in session.exec(
                select(Deployment)
                .where(col(Deployment.active).is_(True))
                .order_by(col(Deployment.id))
            )
            if d.id is not None
        ]
    # Backends are asked outside the session: an API call must not hold a transaction.
    parking = survey((d.id, d.backend, d.handle) for d in rows if d.id is not None)
    deployments = [
        DeploymentFacts(
            id=d.id,
            submission_id=d.submission_id,
            backend=d.backend,
            endpoint=d.endpoint,
            created_at=_utc(d.created_at) or d.created_at,
            parkable=parking[d.id].parkable,
            parked=parking[d.id].parked,
        )
        for d in rows
        if d.id is not None
    ]
    return Tables(submissions=subs, deployments=deployments)


def read_one(submission_id: str) -> SubmissionFacts | None:
    with session_scope() as session:
        sub = session.get(Submission, submission_id)
        if sub is None:
            return None
        return _facts(
            sub, _chat_times(session, submission_id), _stage_times(session, submission_id)
        )


def read_store(store: Store, digests: Iterable[str]) -> StoreFacts:
    """Which of `digests` the store holds live, and everything in its archive."""
    return StoreFacts(
        live=frozenset(d for d in set(digests) if bundles.is_live(store, d)),
        archived=bundles.archived(store),
    )
