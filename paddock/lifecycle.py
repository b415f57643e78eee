"""The status lifecycle: the only place a submission's status changes.

Every change is a compare-and-set (`UPDATE … WHERE status IN (allowed sources)`), so two
processes racing on one submission cannot both win, on SQLite or Postgres alike.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import select

from paddock.db import session_scope
from paddock.errors import IllegalTransition, NotFound
from paddock.models import Status, Submission, utcnow

__all__ = ["PIPELINE", "ALLOWED", "transition", "can_transition"]

# The pipeline's working statuses, in order.
PIPELINE: tuple[Status, ...] = (
    Status.submitted,
    Status.downloading,
    Status.checking,
    Status.serializing,
    Status.uploading,
    Status.deploying,
    Status.warming,
    Status.stress_testing,
    Status.deployed,
)
_WORKING = PIPELINE[1:-1]


def _allowed() -> dict[Status, frozenset[Status]]:
    allowed: dict[Status, set[Status]] = {s: set() for s in Status}
    for i, status in enumerate(PIPELINE[:-1]):
        nxt = PIPELINE[i + 1]
        allowed[status] |= {nxt, Status.failed}
        if status in _WORKING:
            allowed[status].add(status)  # a resumed run re-enters the stage it died in
    # A failed or interrupted submission may resume at any working stage (earlier stages
    # that finished are skipped, so it can enter further down the pipeline).
    for status in (Status.submitted, Status.failed, *_WORKING):
        allowed[status] |= set(_WORKING)
    allowed[Status.submitted] |= {Status.inactive}
    allowed[Status.deployed] |= {Status.inactive, Status.torndown, Status.failed}
    allowed[Status.failed] |= {Status.torndown, Status.archived, Status.inactive}
    allowed[Status.inactive] |= {Status.torndown, Status.archived, Status.deploying}
    allowed[Status.torndown] |= {Status.archived, Status.deploying}
    return {k: frozenset(v) for k, v in allowed.items()}


ALLOWED: dict[Status, frozenset[Status]] = _allowed()


def can_transition(current: Status, new: Status) -> bool:
    return new in ALLOWED[current]


def transition(
    submission_id: str,
    new: Status,
    *,
    reason: str | None = None,
    failed_stage: str | None = None,
    endpoint: str | None = None,
) -> Status:
    """Move a submission to `new`; returns the status it left. Raises IllegalTransition."""
    sources = [s for s, targets in ALLOWED.items() if new in targets]
    values: dict[str, object] = {"status": new, "updated_at": utcnow()}
    if new is Status.failed:
        values |= {"reason": reason, "failed_stage": failed_stage}
    elif new in _WORKING:
        values |= {"reason": None, "failed_stage": None}
    elif reason is not None:
        values["reason"] = reason
    if endpoint is not None or new in (Status.inactive, Status.torndown, Status.archived):
        values["endpoint"] = endpoint
    with session_scope() as session:
        current = session.exec(
            select(Submission.status).where(Submission.id == submission_id)
        ).first()
        if current is None:
            raise NotFound(f"no submission {submission_id!r}")
        current = Status(current)
        if new not in ALLOWED[current]:
            raise IllegalTransition(f"submission {submission_id} is {current}; cannot become {new}")
        result = session.execute(
            update(Submission)
            .where(Submission.id == submission_id, Submission.status == current)
            .where(Submission.status.in_(sources))  # type: ignore[attr-defined]
            .values(**values)
        )
        if result.rowcount != 1:
            raise IllegalTransition(
                f"submission {submission_id} changed status while becoming {new}; try again"
            )
    return current
