"""What the hourly cleanup and the daily archive should do, and doing it.

Each is plan → apply → report. Planning reads the tables (and, for the archive, what the
store holds) into plain facts and decides on them with pure functions, so a dry run is
the plan alone and a test can hand a planner any situation. Applying checks each action's
premise again just before acting, because the plan may be minutes old: a user may have
chatted, redeployed or torn down meanwhile. Every status change goes through the
lifecycle with the status the plan saw as `expect`, and each action that is done removes
its own premise, so a second run finds nothing to do.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func
from sqlmodel import Session, col, select

from paddock import bundles, crud, lifecycle
from paddock.config import get_settings
from paddock.db import session_scope
from paddock.errors import IllegalTransition, NotFound
from paddock.models import (
    Conversation,
    Deployment,
    Message,
    StageRun,
    StageStatus,
    Status,
    Submission,
)
from paddock.serving import stop_serving
from paddock.storage import Store

__all__ = [
    "Kind",
    "Action",
    "Outcome",
    "SubmissionFacts",
    "DeploymentFacts",
    "Tables",
    "StoreFacts",
    "CleanupPolicy",
    "ArchivePolicy",
    "read_tables",
    "read_store",
    "plan_cleanup",
    "plan_archive",
    "apply",
    "apply_all",
    "table_rows",
    "to_markdown",
]

# Statuses whose submission must not be served any more (the user or the flow said so).
STOPPED: frozenset[Status] = frozenset({Status.failed, Status.inactive, Status.torndown})
# Statuses a flow run still moves on from: a stuck one is expired, its bundle is in use.
IN_PIPELINE: tuple[Status, ...] = (Status.submitted, *lifecycle.WORKING)


class Kind(enum.StrEnum):
    stop = "stop"  # a failed, inactive or torn-down submission is still served
    reap = "reap"  # a deployment its (settled) submission no longer uses
    idle = "idle"  # deployed, nobody chatted for a while: made inactive
    expire = "expire"  # stuck in a working status: failed, with the stage named
    archive = "archive"  # an old bundle moved to the store's archive
    purge = "purge"  # an archived bundle past its grace period: deleted


@dataclass(frozen=True)
class Action:
    kind: Kind
    target: str  # a submission id, or a bundle digest (archive, purge)
    reason: str
    expect: Status | None = None  # the submission's status when planned
    deployment_id: int | None = None
    stage: str | None = None
    submissions: tuple[str, ...] = ()  # a bundle's users (archive, purge)
    seen: datetime | None = None  # the latest activity the plan saw (idle, expire)


@dataclass(frozen=True)
class Outcome:
    action: Action
    result: str  # "done", "dry run", "skipped: …" or "error: …"

    @property
    def failed(self) -> bool:
        return self.result.startswith("error")


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


@dataclass(frozen=True)
class Tables:
    submissions: dict[str, SubmissionFacts]
    deployments: list[DeploymentFacts]  # the active ones


@dataclass(frozen=True)
class StoreFacts:
    live: frozenset[str]  # digests complete in the store's live place
    archived: dict[str, datetime] = field(default_factory=dict)  # digest → archived at


@dataclass(frozen=True)
class CleanupPolicy:
    idle_hours: float
    stuck_minutes: float

    @classmethod
    def from_settings(
        cls, *, idle_hours: float | None = None, stuck_minutes: float | None = None
    ) -> CleanupPolicy:
        s = get_settings()
        return cls(
            idle_hours=s.idle_hours if idle_hours is None else idle_hours,
            stuck_minutes=s.stuck_minutes if stuck_minutes is None else stuck_minutes,
        )


@dataclass(frozen=True)
class ArchivePolicy:
    keep: int
    grace_days: float

    @classmethod
    def from_settings(
        cls, *, keep: int | None = None, grace_days: float | None = None
    ) -> ArchivePolicy:
        s = get_settings()
        return cls(
            keep=s.keep_bundles if keep is None else keep,
            grace_days=s.archive_grace_days if grace_days is None else grace_days,
        )


# --------------------------------------------------------------------------- reading


def _utc(moment: datetime | None) -> datetime | None:
    # Stored timestamps come back naive (SQLite, Postgres `timestamp`); they are UTC.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _latest(*moments: datetime | None) -> datetime | None:
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
                times[sid] = _latest(times.get(sid), at) or at
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
        seen = _latest(seen, _utc(run.started_at), _utc(run.ended_at))
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
    """Everything the planners decide on, read in one session."""
    with session_scope() as session:
        chats = _chat_times(session)
        stages = _stage_times(session)
        subs = {s.id: _facts(s, chats, stages) for s in session.exec(select(Submission))}
        deployments = [
            DeploymentFacts(
                id=d.id,
                submission_id=d.submission_id,
                backend=d.backend,
                endpoint=d.endpoint,
                created_at=_utc(d.created_at) or d.created_at,
            )
            for d in session.exec(
                select(Deployment)
                .where(col(Deployment.active).is_(True))
                .order_by(col(Deployment.id))
            )
            if d.id is not None
        ]
    return Tables(submissions=subs, deployments=deployments)


def _read_one(submission_id: str) -> SubmissionFacts | None:
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


# --------------------------------------------------------------------------- planning


def _span(seconds: float) -> str:
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _stuck_stage(sub: SubmissionFacts) -> str:
    if sub.running_stage:
        return sub.running_stage
    for stage in lifecycle.STAGES:
        if stage.status is sub.status:
            return stage.name
    return "pipeline"  # submitted: no stage has started


def _serving(tables: Tables) -> dict[str, int]:
    """Per deployed submission, the deployment that serves it: the newest active one at
    its published endpoint, else its newest active one."""
    by_sub: dict[str, list[DeploymentFacts]] = {}
    for dep in tables.deployments:
        by_sub.setdefault(dep.submission_id, []).append(dep)
    chosen: dict[str, int] = {}
    for sid, deps in by_sub.items():
        sub = tables.submissions.get(sid)
        if sub is not None and sub.status is Status.deployed:
            at_endpoint = [d for d in deps if d.endpoint and d.endpoint == sub.endpoint]
            chosen[sid] = (at_endpoint or deps)[-1].id
    return chosen


def plan_cleanup(tables: Tables, policy: CleanupPolicy, *, now: datetime) -> list[Action]:
    actions: list[Action] = []
    serving = _serving(tables)
    for dep in tables.deployments:
        sub = tables.submissions[dep.submission_id]
        if sub.status in STOPPED:
            kind, reason = Kind.stop, f"submission is {sub.status}"
        elif sub.status is Status.archived:
            kind, reason = Kind.reap, "submission is archived"
        elif sub.status is Status.deployed and serving.get(sub.id) != dep.id:
            kind, reason = Kind.reap, f"superseded by deployment {serving[sub.id]}"
        else:
            continue
        actions.append(Action(kind, sub.id, reason, expect=sub.status, deployment_id=dep.id))
    idle_for = timedelta(hours=policy.idle_hours)
    stuck_for = timedelta(minutes=policy.stuck_minutes)
    for sub in tables.submissions.values():
        if sub.status is Status.deployed:
            since = _latest(sub.last_chat, sub.updated_at) or sub.updated_at
            if now - since >= idle_for:
                what = "no chat message" if sub.last_chat else "no chat message since deployed"
                reason = f"idle: {what} for {_span((now - since).total_seconds())}"
                actions.append(
                    Action(Kind.idle, sub.id, reason, expect=Status.deployed, seen=since)
                )
        elif sub.status in IN_PIPELINE:
            since = _latest(sub.last_stage, sub.updated_at) or sub.updated_at
            if now - since >= stuck_for:
                stage = _stuck_stage(sub)
                reason = (
                    f"expired: no progress for {_span((now - since).total_seconds())} "
                    f"(stuck in {stage})"
                )
                actions.append(
                    Action(Kind.expire, sub.id, reason, expect=sub.status, stage=stage, seen=since)
                )
    return actions


def _kept(tables: Tables, refs: Sequence[bundles.Reference], keep: int) -> dict[str, str]:
    """Per (developer, name), the digests of its newest `keep` bundles → why they stay."""
    groups: dict[tuple[str, str], list[bundles.Reference]] = {}
    for ref in refs:
        sub = tables.submissions.get(ref.submission_id)
        if sub is not None:
            groups.setdefault((sub.developer, sub.name), []).append(ref)
    kept: dict[str, str] = {}
    for (developer, name), group in groups.items():
        group.sort(key=lambda r: tables.submissions[r.submission_id].created_at, reverse=True)
        newest = list(dict.fromkeys(r.digest for r in group))[:keep]
        for digest in newest:
            kept.setdefault(digest, f"one of the newest {keep} of {developer}/{name}")
    return kept


def _protected(tables: Tables, refs: Sequence[bundles.Reference], keep: int) -> dict[str, str]:
    """Digests that must stay live → why: served, in a pipeline, or recent enough."""
    active = {d.submission_id for d in tables.deployments}
    why: dict[str, str] = {}
    for ref in refs:
        sub = tables.submissions.get(ref.submission_id)
        if sub is None:
            continue
        if sub.id in active or sub.status is Status.deployed:
            why.setdefault(ref.digest, f"served by {sub.id}")
        elif sub.status in IN_PIPELINE:
            why.setdefault(ref.digest, f"in the pipeline of {sub.id} ({sub.status})")
    for digest, reason in _kept(tables, refs, keep).items():
        why.setdefault(digest, reason)
    return why


def plan_archive(
    tables: Tables,
    refs: Sequence[bundles.Reference],
    store: StoreFacts,
    policy: ArchivePolicy,
    *,
    now: datetime,
) -> list[Action]:
    users: dict[str, list[str]] = {}
    for ref in refs:
        users.setdefault(ref.digest, []).append(ref.submission_id)
    protected = _protected(tables, refs, policy.keep)
    actions: list[Action] = []
    for digest in sorted(users):
        if digest in store.live and digest not in protected:
            names = sorted(
                {f"{s.developer}/{s.name}" for s in map(tables.submissions.get, users[digest]) if s}
            )
            reason = f"not among the newest {policy.keep} of {', '.join(names)}"
            actions.append(Action(Kind.archive, digest, reason, submissions=tuple(users[digest])))
    grace = timedelta(days=policy.grace_days)
    for digest, at in sorted(store.archived.items()):
        if now - at >= grace:
            archived = tuple(
                sid
                for sid in users.get(digest, [])
                if sid in tables.submissions and tables.submissions[sid].status is Status.archived
            )
            reason = f"archived {_span((now - at).total_seconds())} ago"
            actions.append(Action(Kind.purge, digest, reason, submissions=archived))
    return actions


# --------------------------------------------------------------------------- applying


def _skip(action: Action, why: str) -> Outcome:
    return Outcome(action, f"skipped: {why}")


def _stop_all(submission_id: str) -> int:
    """Stop every active deployment of the submission (a crash can leave more than one)."""
    stopped = 0
    while stop_serving(submission_id):
        stopped += 1
    return stopped


def _deployment(deployment_id: int) -> Deployment | None:
    with session_scope() as session:
        return session.get(Deployment, deployment_id)


def _apply_stop(action: Action) -> Outcome:
    from deployments import get_backend

    if action.deployment_id is None:
        raise ValueError(f"a {action.kind} action names no deployment")
    dep = _deployment(action.deployment_id)
    if dep is None or not dep.active:
        return _skip(action, "already stopped")
    sub = crud.require_submission(submission_id=action.target)
    if sub.status != action.expect:
        return _skip(action, f"the submission is {sub.status} now")
    get_backend(dep.backend).stop(dep.handle)
    crud.close_deployment(deployment_id=action.deployment_id)
    return Outcome(action, "done")


def _moved_on(action: Action, latest: datetime | None) -> bool:
    """Something happened after the activity the plan judged by (a chat, a stage)."""
    return latest is not None and action.seen is not None and latest > action.seen


def _apply_idle(action: Action) -> Outcome:
    sub = _read_one(action.target)
    if sub is None:
        return _skip(action, "the submission is gone")
    if _moved_on(action, _latest(sub.last_chat, sub.updated_at)):
        return _skip(action, "chatted with (or changed) since the plan")
    try:
        lifecycle.transition(sub.id, Status.inactive, reason=action.reason, expect=action.expect)
    except IllegalTransition as exc:
        return _skip(action, str(exc))
    _stop_all(sub.id)
    return Outcome(action, "done")


def _apply_expire(action: Action) -> Outcome:
    """Fail the submission and stop what it serves; its bundle stays, so `paddock run`
    can resume it (the archive flow deals with the bundle later)."""
    sub = _read_one(action.target)
    if sub is None:
        return _skip(action, "the submission is gone")
    if _moved_on(action, _latest(sub.last_stage, sub.updated_at)):
        return _skip(action, "it made progress since the plan")
    try:
        lifecycle.transition(
            sub.id,
            Status.failed,
            reason=action.reason,
            failed_stage=action.stage,
            expect=action.expect,
        )
    except IllegalTransition as exc:
        return _skip(action, str(exc))
    for run in crud.stage_runs(submission_id=sub.id):
        if run.status is StageStatus.running and run.id is not None:
            crud.finish_stage(
                run_id=run.id, status=StageStatus.failed, detail={"error": action.reason}
            )
    _stop_all(sub.id)
    return Outcome(action, "done")


def _apply_archive(action: Action, store: Store) -> Outcome:
    digest = action.target
    users = bundles.users_of(digest)
    subs = [crud.require_submission(submission_id=sid) for sid in users]
    for sub in subs:
        if sub.status is Status.deployed or Status(sub.status) in IN_PIPELINE:
            return _skip(action, f"{sub.id} is {sub.status} now")
        if crud.active_deployment(submission_id=sub.id) is not None:
            return _skip(action, f"{sub.id} is served now")
    if not bundles.is_live(store, digest):
        return _skip(action, "no longer in the store")
    for sub in subs:
        if sub.status is not Status.archived:
            try:
                lifecycle.transition(sub.id, Status.archived, expect=sub.status)
            except IllegalTransition as exc:
                return _skip(action, str(exc))
    bundles.archive(store, digest)
    return Outcome(action, "done")


def _apply_purge(action: Action, store: Store) -> Outcome:
    for sid in action.submissions:
        sub = crud.get_submission(submission_id=sid)
        if sub is not None and sub.status is Status.archived:
            bundles.release(sid, store=store)
    bundles.delete_archived(store, action.target)
    return Outcome(action, "done")


def apply(action: Action, *, store: Store | None = None) -> Outcome:
    """Do one action if its premise still holds; an error is reported, not raised, so one
    stuck server does not keep the rest of the plan from being done."""
    try:
        if action.kind in (Kind.stop, Kind.reap):
            return _apply_stop(action)
        if action.kind is Kind.idle:
            return _apply_idle(action)
        if action.kind is Kind.expire:
            return _apply_expire(action)
        if store is None:
            raise ValueError(f"a {action.kind} action needs the model store")
        if action.kind is Kind.archive:
            return _apply_archive(action, store)
        return _apply_purge(action, store)
    except NotFound as exc:
        return _skip(action, str(exc))
    except Exception as exc:
        return Outcome(action, f"error: {type(exc).__name__}: {exc}")


def apply_all(
    actions: Sequence[Action], *, dry_run: bool, store: Store | None = None
) -> list[Outcome]:
    if dry_run:
        return [Outcome(a, "dry run") for a in actions]
    return [apply(a, store=store) for a in actions]


# --------------------------------------------------------------------------- reporting


def table_rows(outcomes: Sequence[Outcome]) -> list[dict[str, str]]:
    return [
        {
            "action": str(o.action.kind),
            "target": o.action.target,
            "submissions": ", ".join(o.action.submissions),
            "reason": o.action.reason,
            "result": o.result,
        }
        for o in outcomes
    ]


def to_markdown(flow: str, outcomes: Sequence[Outcome], *, dry_run: bool) -> str:
    title = f"# {flow}{' (dry run: nothing was changed)' if dry_run else ''}"
    if not outcomes:
        return f"{title}\n\nNothing to do.\n"
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[str(o.action.kind)] = counts.get(str(o.action.kind), 0) + 1
    summary = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    lines = [title, "", f"{len(outcomes)} actions: {summary}.", ""]
    verb = "would" if dry_run else "did"
    for o in outcomes:
        users = f" ({', '.join(o.action.submissions)})" if o.action.submissions else ""
        lines.append(
            f"- {verb} **{o.action.kind}** `{o.action.target}`{users}: "
            f"{o.action.reason} — {o.result}"
        )
    return "\n".join(lines) + "\n"
