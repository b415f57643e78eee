"""Reads and writes, as small keyword-only functions; nothing else builds SQL.

Each call opens its own short session, so tasks running in different threads or processes
never share one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func
from sqlmodel import col, select

from paddock.db import session_scope
from paddock.errors import NotFound
from paddock.models import (
    Artifact,
    Deployment,
    StageRun,
    StageStatus,
    StressRun,
    Submission,
    utcnow,
)

__all__ = [
    "create_submission",
    "get_submission",
    "require_submission",
    "list_submissions",
    "set_reference",
    "set_resolved_revision",
    "start_stage",
    "finish_stage",
    "record_skip",
    "last_success",
    "stage_runs",
    "add_artifacts",
    "list_artifacts",
    "delete_artifacts",
    "record_deployment",
    "active_deployment",
    "set_deployment_endpoint",
    "close_deployment",
    "add_stress_run",
    "latest_stress_run",
]


def create_submission(
    *,
    developer: str,
    source: str,
    display_name: str,
    requested_revision: str | None = None,
    generation_params: dict[str, Any] | None = None,
    prompt_formatter: dict[str, Any] | None = None,
) -> Submission:
    sub = Submission(
        developer=developer,
        source=source,
        display_name=display_name,
        requested_revision=requested_revision,
        generation_params=generation_params or {},
        prompt_formatter=prompt_formatter or {},
    )
    with session_scope() as session:
        session.add(sub)
    return sub


def get_submission(*, submission_id: str) -> Submission | None:
    with session_scope() as session:
        return session.get(Submission, submission_id)


def require_submission(*, submission_id: str) -> Submission:
    sub = get_submission(submission_id=submission_id)
    if sub is None:
        raise NotFound(f"no submission {submission_id!r}; `paddock list` shows yours")
    return sub


def list_submissions(*, developer: str | None = None, limit: int = 100) -> list[Submission]:
    with session_scope() as session:
        query = select(Submission).order_by(col(Submission.created_at).desc()).limit(limit)
        if developer:
            query = query.where(Submission.developer == developer)
        return list(session.exec(query))


def _update(submission_id: str, **values: Any) -> None:
    with session_scope() as session:
        sub = session.get(Submission, submission_id)
        if sub is None:
            raise NotFound(f"no submission {submission_id!r}")
        for key, value in values.items():
            setattr(sub, key, value)
        sub.updated_at = utcnow()
        session.add(sub)


def set_reference(*, submission_id: str, reference: dict[str, Any]) -> None:
    _update(submission_id, reference=reference)


def set_resolved_revision(*, submission_id: str, revision: str) -> None:
    _update(submission_id, resolved_revision=revision)


def start_stage(*, submission_id: str, stage: str) -> StageRun:
    with session_scope() as session:
        attempts = session.exec(
            select(func.count())
            .select_from(StageRun)
            .where(StageRun.submission_id == submission_id, StageRun.stage == stage)
            .where(col(StageRun.status) != StageStatus.skipped)
        ).one()
        run = StageRun(submission_id=submission_id, stage=stage, attempt=attempts + 1)
        session.add(run)
    return run


def finish_stage(
    *, run_id: int, status: StageStatus, detail: dict[str, Any] | None = None
) -> StageRun:
    with session_scope() as session:
        run = session.get(StageRun, run_id)
        if run is None:
            raise NotFound(f"no stage run {run_id}")
        run.status = status
        run.ended_at = utcnow()
        if detail:
            run.detail = {**run.detail, **detail}
        session.add(run)
    return run


def record_skip(*, submission_id: str, stage: str, detail: dict[str, Any]) -> None:
    now = utcnow()
    with session_scope() as session:
        session.add(
            StageRun(
                submission_id=submission_id,
                stage=stage,
                attempt=0,
                status=StageStatus.skipped,
                started_at=now,
                ended_at=now,
                detail=detail,
            )
        )


def last_success(*, submission_id: str, stage: str) -> StageRun | None:
    with session_scope() as session:
        return session.exec(
            select(StageRun)
            .where(StageRun.submission_id == submission_id, StageRun.stage == stage)
            .where(StageRun.status == StageStatus.succeeded)
            .order_by(col(StageRun.id).desc())
        ).first()


def stage_runs(*, submission_id: str) -> list[StageRun]:
    with session_scope() as session:
        return list(
            session.exec(
                select(StageRun)
                .where(StageRun.submission_id == submission_id)
                .order_by(col(StageRun.id))
            )
        )


def add_artifacts(*, submission_id: str, artifacts: list[tuple[str, int, str]]) -> None:
    """Record (uri, size, sha256) rows, replacing what this submission had before."""
    with session_scope() as session:
        for old in session.exec(select(Artifact).where(Artifact.submission_id == submission_id)):
            session.delete(old)
        for uri, size, sha256 in artifacts:
            session.add(Artifact(submission_id=submission_id, uri=uri, size=size, sha256=sha256))


def list_artifacts(*, submission_id: str) -> list[Artifact]:
    with session_scope() as session:
        return list(
            session.exec(
                select(Artifact)
                .where(Artifact.submission_id == submission_id)
                .order_by(col(Artifact.id))
            )
        )


def delete_artifacts(*, submission_id: str) -> None:
    with session_scope() as session:
        for old in session.exec(select(Artifact).where(Artifact.submission_id == submission_id)):
            session.delete(old)


def record_deployment(
    *, submission_id: str, backend: str, endpoint: str | None, handle: dict[str, Any]
) -> int:
    """Store a started deployment; returns its id."""
    dep = Deployment(submission_id=submission_id, backend=backend, endpoint=endpoint, handle=handle)
    with session_scope() as session:
        session.add(dep)
        session.flush()
        if dep.id is None:  # pragma: no cover - the database assigns it on flush
            raise AssertionError("deployment row has no id")
        return dep.id


def active_deployment(*, submission_id: str) -> Deployment | None:
    with session_scope() as session:
        return session.exec(
            select(Deployment)
            .where(Deployment.submission_id == submission_id, col(Deployment.active).is_(True))
            .order_by(col(Deployment.id).desc())
        ).first()


def set_deployment_endpoint(*, deployment_id: int, endpoint: str) -> None:
    with session_scope() as session:
        dep = session.get(Deployment, deployment_id)
        if dep is None:
            raise NotFound(f"no deployment {deployment_id}")
        dep.endpoint = endpoint
        session.add(dep)


def close_deployment(*, deployment_id: int) -> None:
    with session_scope() as session:
        dep = session.get(Deployment, deployment_id)
        if dep is not None:
            dep.active = False
            dep.stopped_at = utcnow()
            session.add(dep)


def add_stress_run(
    *,
    submission_id: str | None,
    endpoint: str,
    profile: dict[str, Any],
    metrics: dict[str, Any],
    passed: bool,
    failures: list[str],
) -> StressRun:
    run = StressRun(
        submission_id=submission_id,
        endpoint=endpoint,
        profile=profile,
        metrics=metrics,
        passed=passed,
        failures=failures,
    )
    with session_scope() as session:
        session.add(run)
    return run


def latest_stress_run(*, submission_id: str) -> StressRun | None:
    with session_scope() as session:
        return session.exec(
            select(StressRun)
            .where(StressRun.submission_id == submission_id)
            .order_by(col(StressRun.id).desc())
        ).first()
