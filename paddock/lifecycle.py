"""The status lifecycle: the stage order, and the only place a submission's status changes.

Every change is a compare-and-set (`UPDATE … WHERE status = <the status it was read in>`).
A caller that acts on a status it saw earlier (a user who deactivates the model they saw
deployed) passes it as ``expect``, so of N processes racing from the same status exactly
one wins, on SQLite or Postgres alike.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import text, update
from sqlmodel import Session, col, select

from paddock.db import session_scope
from paddock.errors import IllegalTransition, NotFound
from paddock.models import Status, Submission, utcnow

__all__ = [
    "Stage",
    "STAGES",
    "PIPELINE",
    "WORKING",
    "SETTLED",
    "ALLOWED",
    "RUNNING",
    "stage_status",
    "transition",
    "can_transition",
]


@dataclass(frozen=True)
class Stage:
    name: str
    status: Status  # the submission's status while the stage runs (publish: once it has)
    enters: bool = True  # False: the stage's own work is the status change (publish)
    # The stages this one runs beside: it starts when the one before them has finished
    # and is joined before the one after them. It never moves the status (they do), so
    # the status order stays the one line below; `status` is where it starts from.
    alongside: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.alongside and self.enters:
            raise ValueError(f"stage {self.name} runs alongside others: it cannot enter a status")


# The pipeline, in order: the one place the stage order is written. The runtime checks
# (a load, a forward pass, the parity reference) need nothing the next three stages make
# and they need nothing from it until warm-up, so they run beside them. The upload runs
# beside deploy instead of before it when the server maps the bundle its run serialized
# rather than streaming it from S3 (a local server): it then leaves the status to deploy
# and warm-up, and is joined before the stress gate.
STAGES: tuple[Stage, ...] = (
    Stage("download", Status.downloading),
    Stage("sanity", Status.checking),
    Stage("runtime", Status.checking, enters=False, alongside=("serialize", "upload", "deploy")),
    Stage("serialize", Status.serializing),
    Stage("upload", Status.uploading),
    Stage("deploy", Status.deploying),
    Stage("warmup", Status.warming),
    Stage("stress", Status.stress_testing),
    Stage("publish", Status.deployed, enters=False),
)
PIPELINE: tuple[Status, ...] = (Status.submitted, *(s.status for s in STAGES if not s.alongside))
WORKING: tuple[Status, ...] = PIPELINE[1:-1]
# Statuses no flow run moves on from by itself.
SETTLED: frozenset[Status] = frozenset(Status) - {Status.submitted, *WORKING}


def stage_status(name: str) -> Status | None:
    """The status a stage moves the submission to when it starts (None: it moves it itself)."""
    for stage in STAGES:
        if stage.name == name:
            return stage.status if stage.enters else None
    raise KeyError(f"no pipeline stage {name!r}; stages: {[s.name for s in STAGES]}")


def _allowed() -> dict[Status, frozenset[Status]]:
    allowed: dict[Status, set[Status]] = {s: set() for s in Status}
    for i, status in enumerate(PIPELINE[:-1]):
        nxt = PIPELINE[i + 1]
        allowed[status] |= {nxt, Status.failed}
        if status in WORKING:
            allowed[status].add(status)  # a resumed run re-enters the stage it died in
    # A failed or interrupted submission may resume at any working stage (earlier stages
    # that finished are skipped, so it can enter further down the pipeline).
    for status in (Status.submitted, Status.failed, *WORKING):
        allowed[status] |= set(WORKING)
    # A developer may stop a model while its run is still under way: the status changes
    # first, so the run finds at its next stage that it cannot go on (see RUNNING).
    for status in (Status.submitted, *WORKING):
        allowed[status] |= {Status.inactive, Status.torndown}
    allowed[Status.deployed] |= {Status.inactive, Status.torndown, Status.failed}
    allowed[Status.failed] |= {Status.torndown, Status.archived, Status.inactive}
    allowed[Status.inactive] |= {Status.torndown, Status.archived, Status.deploying}
    allowed[Status.torndown] |= {Status.archived, Status.deploying}
    return {k: frozenset(v) for k, v in allowed.items()}


ALLOWED: dict[Status, frozenset[Status]] = _allowed()
# The statuses a flow run can find its submission in and still go on: a run of a model
# deactivated or torn down meanwhile must stop, not redeploy it (a redeploy moves the
# status to deploying itself, before its run starts).
RUNNING: frozenset[Status] = frozenset({Status.submitted, Status.failed, *WORKING})


def can_transition(current: Status, new: Status) -> bool:
    return new in ALLOWED[current]


def transition(
    submission_id: str,
    new: Status,
    *,
    reason: str | None = None,
    failed_stage: str | None = None,
    endpoint: str | None = None,
    expect: Status | Collection[Status] | None = None,
) -> Status:
    """Move a submission to `new`; returns the status it left. Raises IllegalTransition.

    With ``expect``, the move happens only from that status (or one of those): the caller
    saw it there and means to act on what it saw.
    """
    values: dict[str, object] = {"status": new, "updated_at": utcnow()}
    if new is Status.failed:
        values |= {"reason": reason, "failed_stage": failed_stage}
    elif new in WORKING:
        values |= {"reason": None, "failed_stage": None}
    elif reason is not None:
        values["reason"] = reason
    if endpoint is not None or new in (Status.inactive, Status.torndown, Status.archived):
        values["endpoint"] = endpoint
    with session_scope() as session:
        return _move(session, submission_id, new, values, expect)


def _move(
    session: Session,
    submission_id: str,
    new: Status,
    values: dict[str, object],
    expect: Status | Collection[Status] | None = None,
) -> Status:
    """The compare-and-set itself, inside the caller's transaction."""
    sources = [s for s, targets in ALLOWED.items() if new in targets]
    current = session.exec(select(Submission.status).where(Submission.id == submission_id)).first()
    if current is None:
        raise NotFound(f"no submission {submission_id!r}")
    current = Status(current)
    expected = {expect} if isinstance(expect, Status) else set(expect or ())
    if expected and current not in expected:
        raise IllegalTransition(
            f"submission {submission_id} is {current}, no longer "
            f"{' or '.join(sorted(expected))}; cannot become {new}"
        )
    if new not in ALLOWED[current]:
        raise IllegalTransition(f"submission {submission_id} is {current}; cannot become {new}")
    result = session.connection().execute(
        update(Submission)
        .where(col(Submission.id) == submission_id, col(Submission.status) == current)
        .where(col(Submission.status).in_(sources))
        .values(**values)
    )
    if result.rowcount != 1:
        raise IllegalTransition(
            f"submission {submission_id} changed status while becoming {new}; try again"
        )
    return current


def publish(submission_id: str, endpoint: str, *, keep: int = 0) -> list[str]:
    """Make the submission deployed; with ``keep`` > 0, the developer's other deployed
    models beyond the newest ``keep - 1`` become inactive in the same transaction.
    Returns the ids it retired, whose servers the caller stops once this has committed.

    Two of a developer's models publishing at once must not both stay: the developer's
    deployments are serialized first — an advisory lock on Postgres, the database's one
    writer on SQLite (taken by the first statement, a write) — so the second to publish
    sees the first as deployed and retires it.
    """
    now = utcnow()
    live = {"status": Status.deployed, "endpoint": endpoint, "updated_at": now}
    with session_scope() as session:
        if keep <= 0:
            _move(session, submission_id, Status.deployed, live)
            return []
        connection = session.connection()
        touched = connection.execute(
            update(Submission)
            .where(col(Submission.id) == submission_id)
            .values(updated_at=now)
            .returning(col(Submission.developer))
        ).first()
        if touched is None:
            raise NotFound(f"no submission {submission_id!r}")
        developer = touched[0]
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                {"key": f"paddock.deployed.{developer}"},
            )
        others = session.exec(
            select(Submission.id)
            .where(Submission.developer == developer, Submission.status == Status.deployed)
            .where(Submission.id != submission_id)
            .order_by(col(Submission.created_at).desc(), col(Submission.id).desc())
        ).all()
        _move(session, submission_id, Status.deployed, live)
        retired: list[str] = []
        why = f"replaced by {submission_id} (PADDOCK_MAX_DEPLOYED_PER_DEVELOPER={keep})"
        for old in others[keep - 1 :]:
            gone: dict[str, object] = {
                "status": Status.inactive,
                "endpoint": None,
                "updated_at": now,
                "reason": why,
            }
            try:
                _move(session, old, Status.inactive, gone, expect=Status.deployed)
            except IllegalTransition:
                continue  # stopped by its developer meanwhile: already not live
            retired.append(old)
    return retired
