"""The models users can be sent to right now, and whether they answer.

A model is served while its submission is deployed and an active deployment has an
endpoint; the relay marks one down when it stops answering and the router's probe marks
it up again, so one bad endpoint costs its users a single failed reply, not every one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from paddock.db import session_scope
from paddock.errors import IllegalTransition, NotFound
from paddock.models import Deployment, ModelHealth, Status, Submission, utcnow

__all__ = ["Served", "served_models", "require_served", "mark_down", "mark_up", "health_of"]


@dataclass(frozen=True, slots=True)
class Served:
    """A deployed submission and where its active deployment answers."""

    submission: Submission
    endpoint: str
    served_name: str


def served_models(*, ids: Iterable[str] | None = None) -> list[Served]:
    """Deployed submissions with an active deployment that has an endpoint, newest first."""
    with session_scope() as session:
        query = (
            select(Submission, Deployment)
            .join(Deployment, col(Deployment.submission_id) == col(Submission.id))
            .where(Submission.status == Status.deployed)
            .where(col(Deployment.active).is_(True), col(Deployment.endpoint).is_not(None))
            .order_by(col(Submission.created_at).desc(), col(Deployment.id).desc())
        )
        if ids is not None:
            query = query.where(col(Submission.id).in_(list(ids)))
        seen: set[str] = set()
        out = []
        for sub, dep in session.exec(query).all():
            if sub.id in seen:
                continue  # an older active row of the same submission
            seen.add(sub.id)
            assert dep.endpoint is not None
            name = str(dep.handle.get("served_name") or sub.display_name)
            out.append(Served(sub, dep.endpoint, name))
        return out


def require_served(*, submission_id: str) -> Served:
    """The model a conversation talks to, or NotFound once it is no longer served."""
    found = served_models(ids=[submission_id])
    if not found:
        raise NotFound(
            f"model {submission_id!r} is not being served (unknown, or taken down); "
            "start a new conversation"
        )
    return found[0]


# --------------------------------------------------------------------------- health


def _set_health(submission_id: str, *, healthy: bool, error: str | None) -> None:
    now = utcnow()
    for _ in range(2):  # a concurrent first insert wins the unique constraint: then update
        try:
            with session_scope() as session:
                result = session.execute(
                    update(ModelHealth)
                    .where(col(ModelHealth.submission_id) == submission_id)
                    .values(healthy=healthy, error=error, checked_at=now)
                )
                if getattr(result, "rowcount", 0) == 0:
                    session.add(
                        ModelHealth(
                            submission_id=submission_id,
                            healthy=healthy,
                            error=error,
                            checked_at=now,
                        )
                    )
            return
        except IntegrityError:
            continue
    raise IllegalTransition(f"could not record the health of {submission_id!r}")


def mark_down(*, submission_id: str, error: str) -> None:
    """Take a model out of the router's choices until a probe finds it answering."""
    _set_health(submission_id, healthy=False, error=error[:500])


def mark_up(*, submission_id: str) -> None:
    _set_health(submission_id, healthy=True, error=None)


def health_of(*, submission_ids: Sequence[str]) -> dict[str, ModelHealth]:
    """Health rows by submission; a model without one has never failed (healthy)."""
    if not submission_ids:
        return {}
    with session_scope() as session:
        rows = session.exec(
            select(ModelHealth).where(col(ModelHealth.submission_id).in_(list(submission_ids)))
        )
        return {row.submission_id: row for row in rows}
