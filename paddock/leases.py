"""One flow run per submission at a time, across processes and machines.

The status lifecycle alone cannot stop a second run: a resumed run may legally re-enter
the stage the first is in, and both would start a server. So a run first takes the
submission's lease (one row per submission, taken by a compare-and-set insert or update)
and keeps it fresh while it works. A run that died without releasing its lease stops
refreshing it; once it is stale the next run may take it over, so a killed worker never
locks its submission for good.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from paddock.config import get_settings
from paddock.db import session_scope
from paddock.errors import IllegalTransition, LeaseLost
from paddock.models import RunLease, utcnow

__all__ = [
    "LeaseHeld",
    "LeaseLost",
    "acquire",
    "heartbeat",
    "release",
    "holder_of",
    "held",
    "new_holder",
    "ensure_held",
]

log = logging.getLogger("paddock.leases")


class LeaseHeld(IllegalTransition):
    """Another live run holds the submission; this one must not start."""


# The leases this process holds (submission id -> holder), for the stages to check: a
# run whose lease was taken over while it still lives must stop, not race the new holder.
_HELD: dict[str, str] = {}
_HELD_LOCK = threading.Lock()


def new_holder() -> str:
    """A name no other acquisition shares, that still says where the run lives."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _aware(moment: datetime) -> datetime:
    # SQLite hands datetimes back without their zone; paddock writes them all in UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def holder_of(submission_id: str) -> RunLease | None:
    with session_scope() as session:
        return session.get(RunLease, submission_id)


def acquire(submission_id: str, *, holder: str | None = None) -> str:
    """Take the submission's lease; returns the holder name to heartbeat and release with.

    Raises LeaseHeld, naming the live holder, when another run has it.
    """
    holder = holder or new_holder()
    host, pid = holder.split(":")[0], int(holder.split(":")[1])
    stale = get_settings().lease_stale_seconds
    for _ in range(5):  # a release between our insert and our update: try again
        now = utcnow()
        try:
            with session_scope() as session:
                session.add(
                    RunLease(
                        submission_id=submission_id,
                        holder=holder,
                        host=host,
                        pid=pid,
                        acquired_at=now,
                        heartbeat_at=now,
                    )
                )
            return holder
        except IntegrityError:
            pass
        with session_scope() as session:
            taken = session.connection().execute(
                update(RunLease)
                .where(col(RunLease.submission_id) == submission_id)
                .where(col(RunLease.heartbeat_at) < now - timedelta(seconds=stale))
                .values(holder=holder, host=host, pid=pid, acquired_at=now, heartbeat_at=now)
            )
        if taken.rowcount == 1:
            log.warning("took over the stale run lease of submission %s", submission_id)
            return holder
        current = holder_of(submission_id)
        if current is not None and _dead_here(current):
            # A killed worker on this machine: no need to wait for its lease to go stale.
            with session_scope() as session:
                taken = session.connection().execute(
                    update(RunLease)
                    .where(col(RunLease.submission_id) == submission_id)
                    .where(col(RunLease.holder) == current.holder)
                    .values(holder=holder, host=host, pid=pid, acquired_at=now, heartbeat_at=now)
                )
            if taken.rowcount == 1:
                log.warning(
                    "took over submission %s's lease from pid %d, which is gone",
                    submission_id,
                    current.pid,
                )
                return holder
            continue
        if current is not None:
            raise LeaseHeld(_held_by(submission_id, current, stale))
    raise LeaseHeld(f"submission {submission_id}: its run lease keeps changing hands; try again")


def _dead_here(lease: RunLease) -> bool:
    """The holder ran on this machine and its process is gone."""
    if lease.host != socket.gethostname():
        return False
    try:
        os.kill(lease.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _held_by(submission_id: str, lease: RunLease, stale: float) -> str:
    since = _aware(lease.acquired_at)
    quiet = (utcnow() - _aware(lease.heartbeat_at)).total_seconds()
    return (
        f"submission {submission_id} is already being run by pid {lease.pid} on {lease.host} "
        f"since {since:%Y-%m-%d %H:%M:%S} UTC (last heard from {quiet:.0f} s ago); wait for "
        f"that run to end, or for it to fall silent for {stale:.0f} s if it died"
    )


def heartbeat(submission_id: str, holder: str) -> bool:
    """Refresh the lease; False when it is no longer ours (taken over as stale)."""
    with session_scope() as session:
        result = session.connection().execute(
            update(RunLease)
            .where(col(RunLease.submission_id) == submission_id, col(RunLease.holder) == holder)
            .values(heartbeat_at=utcnow())
        )
    return bool(result.rowcount == 1)


def release(submission_id: str, holder: str) -> None:
    """Give the lease back (only ours: a run that lost it releases nothing)."""
    with session_scope() as session:
        session.connection().execute(
            delete(RunLease).where(
                col(RunLease.submission_id) == submission_id,
                col(RunLease.holder) == holder,
            )
        )


def ensure_held(submission_id: str) -> None:
    """Raise LeaseLost if this process holds the submission's lease no longer.

    Called by every stage before it starts (``tasks/stage.py``): the heartbeat thread
    finds a takeover within a third of the staleness limit, but only the run itself can
    stop its work, and a stage boundary is where stopping leaves nothing half-done. A
    stage run outside a leased flow (a test, a one-off call) has nothing to check.
    """
    with _HELD_LOCK:
        holder = _HELD.get(submission_id)
    if holder is None:
        return
    current = holder_of(submission_id)
    if current is None or current.holder != holder:
        taker = f"pid {current.pid} on {current.host}" if current else "nobody (it was released)"
        raise LeaseLost(
            f"submission {submission_id}: this run lost its lease to {taker} (it fell silent "
            "for too long, or looked dead); it stops here and leaves the submission, its "
            "upload and its server to that run"
        )


@contextmanager
def held(submission_id: str) -> Iterator[str]:
    """Hold the lease for the block, refreshed by a thread while the stages work.

    A thread, not a refresh at each stage start: one stage (a vLLM start, a large upload)
    can outlast the staleness limit on its own.
    """
    holder = acquire(submission_id)
    stop = threading.Event()
    interval = get_settings().lease_stale_seconds / 3

    def beat() -> None:
        while not stop.wait(interval):
            try:
                if not heartbeat(submission_id, holder):
                    log.error(
                        "submission %s: this run lost its lease; it stops at its next stage",
                        submission_id,
                    )
                    return
            except Exception as exc:  # a database blip: the next beat may get through
                log.warning("submission %s: lease heartbeat failed: %s", submission_id, exc)

    thread = threading.Thread(target=beat, name=f"lease-{submission_id}", daemon=True)
    thread.start()
    with _HELD_LOCK:
        _HELD[submission_id] = holder
    try:
        yield holder
    finally:
        with _HELD_LOCK:
            if _HELD.get(submission_id) == holder:
                del _HELD[submission_id]
        stop.set()
        thread.join(timeout=5)
        try:
            release(submission_id, holder)
        except Exception as exc:  # it goes stale and is taken over instead
            log.warning("submission %s: could not release its lease: %s", submission_id, exc)
