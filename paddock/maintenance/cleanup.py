"""The hourly cleanup: stop what must not be served, park or retire idle models, expire
stuck runs.

Every status change goes through the lifecycle with the status the plan saw as
`expect`, and each action that is done removes its own premise, so a second run finds
nothing to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from paddock import crud, lifecycle
from paddock.config import get_settings
from paddock.db import session_scope
from paddock.errors import IllegalTransition
from paddock.models import Deployment, StageStatus, Status
from paddock.serving import stop_serving

from .actions import IN_PIPELINE, STOPPED, Action, Kind, Outcome, moved_on, skip, span
from .facts import DeploymentFacts, SubmissionFacts, Tables, latest, read_one
from .parking import park

__all__ = [
    "CleanupPolicy",
    "plan_cleanup",
    "apply_stop",
    "apply_idle",
    "apply_park",
    "apply_expire",
]


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


# --------------------------------------------------------------------------- planning


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


def _idle(
    sub: SubmissionFacts, serves: DeploymentFacts | None, reason: str, since: datetime
) -> Action | None:
    """Park an idle model where its backend can (one parked already needs nothing), else
    make it inactive."""
    if serves is None or not serves.parkable:
        return Action(Kind.idle, sub.id, reason, expect=Status.deployed, seen=since)
    if serves.parked:
        return None
    return Action(
        Kind.park, sub.id, reason, expect=Status.deployed, deployment_id=serves.id, seen=since
    )


def plan_cleanup(tables: Tables, policy: CleanupPolicy, *, now: datetime) -> list[Action]:
    """An idle model is parked where its backend can (it stays deployed, and the router
    wakes it when users come back; one already parked needs nothing), else made inactive
    and stopped."""
    actions: list[Action] = []
    serving = _serving(tables)
    by_id = {d.id: d for d in tables.deployments}
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
            since = latest(sub.last_chat, sub.updated_at) or sub.updated_at
            if now - since >= idle_for:
                what = "no chat message" if sub.last_chat else "no chat message since deployed"
                reason = f"idle: {what} for {span((now - since).total_seconds())}"
                idle = _idle(sub, by_id.get(serving.get(sub.id, -1)), reason, since)
                if idle is not None:
                    actions.append(idle)
        elif sub.status in IN_PIPELINE:
            since = latest(sub.last_stage, sub.updated_at) or sub.updated_at
            if now - since >= stuck_for:
                stage = _stuck_stage(sub)
                reason = (
                    f"expired: no progress for {span((now - since).total_seconds())} "
                    f"(stuck in {stage})"
                )
                actions.append(
                    Action(Kind.expire, sub.id, reason, expect=sub.status, stage=stage, seen=since)
                )
    return actions


# --------------------------------------------------------------------------- applying


def _stop_all(submission_id: str) -> int:
    """Stop every active deployment of the submission (a crash can leave more than one)."""
    stopped = 0
    while stop_serving(submission_id):
        stopped += 1
    return stopped


def _deployment(deployment_id: int) -> Deployment | None:
    with session_scope() as session:
        return session.get(Deployment, deployment_id)


def apply_stop(action: Action) -> Outcome:
    """Stop (or reap) one deployment, unless it stopped or its submission moved on."""
    from deployments import get_backend

    if action.deployment_id is None:
        raise ValueError(f"a {action.kind} action names no deployment")
    dep = _deployment(action.deployment_id)
    if dep is None or not dep.active:
        return skip(action, "already stopped")
    sub = crud.require_submission(submission_id=action.target)
    if sub.status != action.expect:
        return skip(action, f"the submission is {sub.status} now")
    get_backend(dep.backend).stop(dep.handle)
    crud.close_deployment(deployment_id=action.deployment_id)
    return Outcome(action, "done")


def apply_idle(action: Action) -> Outcome:
    sub = read_one(action.target)
    if sub is None:
        return skip(action, "the submission is gone")
    if moved_on(action, latest(sub.last_chat, sub.updated_at)):
        return skip(action, "chatted with (or changed) since the plan")
    try:
        lifecycle.transition(sub.id, Status.inactive, reason=action.reason, expect=action.expect)
    except IllegalTransition as exc:
        return skip(action, str(exc))
    _stop_all(sub.id)
    return Outcome(action, "done")


def apply_park(action: Action) -> Outcome:
    """Scale the idle model's deployment to zero, its status left `deployed`: the router
    keeps users from it and wakes it when one comes. Parked already: nothing to do."""
    if action.deployment_id is None:
        raise ValueError(f"a {action.kind} action names no deployment")
    sub = read_one(action.target)
    if sub is None:
        return skip(action, "the submission is gone")
    if sub.status is not action.expect:
        return skip(action, f"the submission is {sub.status} now")
    if moved_on(action, latest(sub.last_chat, sub.updated_at)):
        return skip(action, "chatted with (or changed) since the plan")
    dep = _deployment(action.deployment_id)
    if dep is None or not dep.active:
        return skip(action, "no longer served")
    if not park(dep.backend, dep.handle):
        return skip(action, "already parked (scaled to zero)")
    return Outcome(action, "done")


def apply_expire(action: Action) -> Outcome:
    """Fail the submission and stop what it serves; its bundle stays, so `paddock run`
    can resume it (the archive flow deals with the bundle later)."""
    sub = read_one(action.target)
    if sub is None:
        return skip(action, "the submission is gone")
    if moved_on(action, latest(sub.last_stage, sub.updated_at)):
        return skip(action, "it made progress since the plan")
    try:
        lifecycle.transition(
            sub.id,
            Status.failed,
            reason=action.reason,
            failed_stage=action.stage,
            expect=action.expect,
        )
    except IllegalTransition as exc:
        return skip(action, str(exc))
    for run in crud.stage_runs(submission_id=sub.id):
        if run.status is StageStatus.running and run.id is not None:
            crud.finish_stage(
                run_id=run.id, status=StageStatus.failed, detail={"error": action.reason}
            )
    _stop_all(sub.id)
    return Outcome(action, "done")
