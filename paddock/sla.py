"""The five-minute SLA as a clock per submission, not a figure worked out afterwards.

The clock starts when a submission is accepted (so time spent queued for a worker counts:
the developer is waiting either way) and stops once: *met* when the outcome — deployed, or
the reason it was refused or failed — arrived before the deadline; *breached* when an alarm
(the proactive Prefect automation calling `POST /hooks/sla-breach`) finds the run still
going after it, or when a run is seen to have ended late. Both are compare-and-set writes,
so the first word wins and every later one is a no-op.

This module owns the `sla_records` table and writes it itself, as `lifecycle` does for the
status: the rules for stopping the clock and the SQL that stops it belong together.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from paddock import crud, lifecycle
from paddock.config import get_settings
from paddock.db import session_scope
from paddock.errors import NotFound
from paddock.models import SlaRecord, StageRun, StageStatus, Status, Submission, utcnow

__all__ = [
    "QUEUED",
    "HOOK_SECRET_FILE",
    "SlaView",
    "Breach",
    "StageTime",
    "SlaSummary",
    "open_clock",
    "drop_clock",
    "get",
    "settle",
    "view",
    "record_breach",
    "summary",
    "describe",
    "hook_secret",
    "ensure_hook_secret",
]

# The pseudo-stage for the time between acceptance and the first stage starting.
QUEUED = "queued"
HOOK_SECRET_FILE = "hook-secret.key"


def _utc(moment: datetime) -> datetime:
    """Stored timestamps come back naive (SQLite, Postgres `timestamp`); they are UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _iso(moment: datetime | None) -> str | None:
    return _utc(moment).isoformat() if moment is not None else None


@dataclass
class SlaView:
    """Where a submission stands against its SLA, for `paddock status` and the API.

    `state` is `on_time` (clock running, deadline ahead), `late` (deadline passed, run
    still going, no alarm recorded yet), `met` or `breached`. Exactly one of
    `seconds_left` / `seconds_late` is set. `slowest_stage` says where the time went,
    `queued` included.
    """

    seconds: int
    accepted_at: str
    deadline: str
    state: str
    elapsed_seconds: float
    seconds_left: float | None
    seconds_late: float | None
    met_at: str | None
    breached_at: str | None
    breach_stage: str | None
    slowest_stage: str | None
    slowest_seconds: float | None
    queued_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Breach:
    """What an alarm achieved: `recorded` is True for the one call that stopped the clock."""

    recorded: bool
    view: SlaView


# ----------------------------------------------------------------------------- the clock


def open_clock(submission_id: str) -> bool:
    """Start the clock of a submission that was just accepted; True if this call did.

    Only a submission that has not begun (status `submitted`, no stage run) gets a clock:
    a resume or a redeploy is judged against the deadline set at acceptance, and a row
    recorded before SLAs were tracked does not get a deadline that passed long ago.
    """
    if get(submission_id) is not None:
        return False
    sub = crud.require_submission(submission_id=submission_id)
    if sub.status != Status.submitted or crud.stage_runs(submission_id=submission_id):
        return False
    seconds = get_settings().sla_seconds
    accepted = _utc(sub.created_at)
    record = SlaRecord(
        submission_id=submission_id,
        seconds=seconds,
        accepted_at=accepted,
        deadline=accepted + timedelta(seconds=seconds),
    )
    try:
        with session_scope() as session:
            session.add(record)
    except IntegrityError:  # a racing start opened it first; theirs stands
        return False
    return True


def drop_clock(submission_id: str) -> None:
    """Forget a clock whose run could not even be started (that failure is the platform's,
    reported to the developer at once, not a run that met its SLA)."""
    with session_scope() as session:
        session.connection().execute(
            delete(SlaRecord).where(
                col(SlaRecord.submission_id) == submission_id,
                col(SlaRecord.met_at).is_(None),
                col(SlaRecord.breached_at).is_(None),
            )
        )


def get(submission_id: str) -> SlaRecord | None:
    with session_scope() as session:
        return session.get(SlaRecord, submission_id)


def _stop(submission_id: str, **values: Any) -> bool:
    """Stop the clock unless something stopped it first; True if this call did."""
    with session_scope() as session:
        result = session.connection().execute(
            update(SlaRecord)
            .where(
                col(SlaRecord.submission_id) == submission_id,
                col(SlaRecord.met_at).is_(None),
                col(SlaRecord.breached_at).is_(None),
            )
            .values(**values)
        )
        return bool(result.rowcount == 1)


def _settled(record: SlaRecord) -> bool:
    return record.met_at is not None or record.breached_at is not None


def _outcome_at(sub: Submission, runs: list[StageRun]) -> datetime | None:
    """When the developer had their answer, or None while the run is still going.

    A published model's answer came when `publish` first succeeded, whatever happened to
    it since (deactivated, redeployed); otherwise a settled status is the answer, and its
    time is the last stage's end (the row's own update time when no stage ran).
    """
    published = [
        r.ended_at
        for r in runs
        if r.stage == "publish" and r.status is StageStatus.succeeded and r.ended_at
    ]
    if published:
        return _utc(min(published))
    if sub.status not in lifecycle.SETTLED:
        return None
    ends = [r.ended_at for r in runs if r.ended_at is not None]
    return _utc(max(ends)) if ends else _utc(sub.updated_at)


def _stage_at(runs: list[StageRun], moment: datetime) -> str:
    """The stage under way at `moment` (`queued` before the first one started)."""
    worked = [r for r in runs if r.status is not StageStatus.skipped]
    started = [r for r in worked if _utc(r.started_at) <= moment]
    if not started:
        return QUEUED
    under_way = [r for r in started if r.ended_at is None or _utc(r.ended_at) >= moment]
    return (under_way or started)[-1].stage


def settle(submission_id: str) -> SlaRecord | None:
    """Stop the clock if the run has ended: met before the deadline, breached after it.

    Called wherever a submission is looked at (its status, the next run's start, an
    alarm), so a run judged nowhere else — the flow's own last look included — is judged
    by its real end, never by when someone happened to ask.
    """
    record = get(submission_id)
    if record is None or _settled(record):
        return record
    sub = crud.require_submission(submission_id=submission_id)
    runs = crud.stage_runs(submission_id=submission_id)
    ended = _outcome_at(sub, runs)
    if ended is None:
        return record
    deadline = _utc(record.deadline)
    if ended <= deadline:
        _stop(submission_id, met_at=ended)
    else:
        _stop(submission_id, breached_at=ended, breach_stage=_stage_at(runs, deadline))
    return get(submission_id)


def record_breach(submission_id: str) -> Breach:
    """The alarm: the deadline passed and the run is still going. Idempotent.

    A run that has in fact ended is judged by its end instead (the alarm and the end
    can cross), and an alarm before the deadline records nothing.
    """
    record = settle(submission_id)
    if record is None:
        raise NotFound(f"submission {submission_id!r} has no SLA clock")
    recorded = False
    now = utcnow()
    if not _settled(record) and now >= _utc(record.deadline):
        runs = crud.stage_runs(submission_id=submission_id)
        recorded = _stop(submission_id, breached_at=now, breach_stage=_stage_at(runs, now))
    found = view(submission_id)
    assert found is not None  # the record exists: checked above
    return Breach(recorded=recorded, view=found)


# ----------------------------------------------------------------------------- reading


def _spent(runs: list[StageRun], accepted: datetime, until: datetime) -> dict[str, float]:
    """Seconds per stage up to `until`, `queued` first; attempts of a stage add up."""
    worked = [r for r in runs if r.status is not StageStatus.skipped]
    first = min((_utc(r.started_at) for r in worked), default=until)
    spent: dict[str, float] = {QUEUED: max(0.0, (min(first, until) - accepted).total_seconds())}
    for r in worked:
        start = _utc(r.started_at)
        end = _utc(r.ended_at) if r.ended_at is not None else until
        spent[r.stage] = spent.get(r.stage, 0.0) + max(
            0.0, (min(end, until) - start).total_seconds()
        )
    return spent


def view(submission_id: str) -> SlaView | None:
    """The submission against its SLA right now; None if it has no clock."""
    judged = _judge(submission_id)
    return judged[0] if judged else None


def _judge(submission_id: str) -> tuple[SlaView, dict[str, float]] | None:
    """The view, and the seconds each stage took (for the summary's averages)."""
    record = settle(submission_id)
    if record is None:
        return None
    sub = crud.require_submission(submission_id=submission_id)
    runs = crud.stage_runs(submission_id=submission_id)
    accepted, deadline = _utc(record.accepted_at), _utc(record.deadline)
    until = _outcome_at(sub, runs) or utcnow()
    if record.met_at is not None:
        state, until = "met", _utc(record.met_at)
    elif record.breached_at is not None:
        state = "breached"
    else:
        state = "late" if until > deadline else "on_time"
    spent = _spent(runs, accepted, until)
    slowest = max(spent, key=lambda k: spent[k])
    margin = (deadline - until).total_seconds()
    late = state in ("late", "breached")
    found = SlaView(
        seconds=record.seconds,
        accepted_at=accepted.isoformat(),
        deadline=deadline.isoformat(),
        state=state,
        elapsed_seconds=round((until - accepted).total_seconds(), 3),
        seconds_left=None if late else round(max(margin, 0.0), 3),
        seconds_late=round(max(-margin, 0.0), 3) if late else None,
        met_at=_iso(record.met_at),
        breached_at=_iso(record.breached_at),
        breach_stage=record.breach_stage,
        slowest_stage=slowest,
        slowest_seconds=round(spent[slowest], 3),
        queued_seconds=round(spent[QUEUED], 3),
    )
    return found, spent


def describe(sla: dict[str, Any], status: str | None = None) -> str:
    """One line for a person: time left, or how late and where the time went.

    A run that ended without deploying stopped the clock in time too, but "met the SLA"
    would read as a success: it is told as the failure it was, and how fast.
    """
    where = f"{sla['slowest_stage']} {sla['slowest_seconds']:.1f} s"
    if sla["state"] == "on_time":
        return f"{sla['seconds_left']:.1f} s left of the {sla['seconds']} s SLA (slowest: {where})"
    if sla["state"] == "met" and status == "failed":
        return f"failed after {sla['elapsed_seconds']:.1f} s, within the {sla['seconds']} s SLA"
    if sla["state"] == "met":
        return f"met the {sla['seconds']} s SLA with {sla['seconds_left']:.1f} s to spare"
    late = f"late by {sla['seconds_late']:.1f} s against the {sla['seconds']} s SLA"
    if sla["state"] == "breached":
        return f"SLA breached in {sla['breach_stage']}: {late} (slowest: {where})"
    return f"{late} (slowest: {where})"


@dataclass
class StageTime:
    stage: str
    submissions: int
    mean_seconds: float
    max_seconds: float


@dataclass
class SlaSummary:
    """Every clock at once, for `paddock sla`: how many were met and where time goes."""

    sla_seconds: int
    submissions: int = 0
    met: int = 0
    breached: int = 0
    late: int = 0
    on_time: int = 0
    breach_stages: dict[str, int] = field(default_factory=dict)
    slowest_stages: list[StageTime] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summary(*, limit: int = 1000) -> SlaSummary:
    """The newest `limit` clocks, each judged as `view` judges it."""
    with session_scope() as session:
        ids = session.exec(
            select(SlaRecord.submission_id).order_by(col(SlaRecord.accepted_at).desc()).limit(limit)
        ).all()
    out = SlaSummary(sla_seconds=get_settings().sla_seconds)
    times: dict[str, list[float]] = {}
    for submission_id in ids:
        judged = _judge(submission_id)
        if judged is None:  # pragma: no cover - listed a moment ago
            continue
        found, spent = judged
        out.submissions += 1
        setattr(out, found.state, getattr(out, found.state) + 1)
        if found.breach_stage:
            out.breach_stages[found.breach_stage] = out.breach_stages.get(found.breach_stage, 0) + 1
        for stage, seconds in spent.items():
            times.setdefault(stage, []).append(seconds)
    out.slowest_stages = sorted(
        (
            StageTime(
                stage=stage,
                submissions=len(values),
                mean_seconds=round(sum(values) / len(values), 3),
                max_seconds=round(max(values), 3),
            )
            for stage, values in times.items()
        ),
        key=lambda t: t.mean_seconds,
        reverse=True,
    )
    return out


# ----------------------------------------------------------------------------- the hook


def hook_secret() -> str | None:
    """The secret the SLA webhook must present: configured, or the one `paddock up` made.

    None means no hook can be trusted, so every call is refused.
    """
    settings = get_settings()
    if settings.hook_secret is not None:
        return settings.hook_secret.get_secret_value() or None
    path = settings.home / HOOK_SECRET_FILE
    return ensure_hook_secret() if path.exists() else None


def ensure_hook_secret() -> str:
    """The hook secret, creating the 0600 key file when none is configured."""
    from paddock.privacy import load_or_create_key

    settings = get_settings()
    if settings.hook_secret is not None and settings.hook_secret.get_secret_value():
        return settings.hook_secret.get_secret_value()
    return load_or_create_key(settings.home / HOOK_SECRET_FILE).hex()
