"""Models parked at zero replicas: noticed by the router, woken once, never handed a user cold.

A backend that can park an idle model (Kubernetes: its Deployment at zero replicas) keeps
the model's endpoint, so nothing in paddock's tables says it is asleep; only the backend
knows. The router asks it (`Waker.parked`, at most once per model every `cache_s`, since
that is an API call) and keeps a parked model out of the choice: a user sent there would
wait minutes for a cold start, or get an error.

Instead the router wakes it (`Waker.wake`), and only once however many conversations
start meanwhile, across API processes too: the wake is claimed by a compare-and-set on
the model's health row (``error`` = "waking: …"), which no second claim passes until
`grace_s` has gone by without news. A woken model's health row stays down with that note;
the router's ordinary probe of a model that is down brings it back (marked up) when its
`/health` answers, so it serves again as soon as its pods are ready.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import and_, not_, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from paddock.db import session_scope
from paddock.models import Deployment, ModelHealth, utcnow

__all__ = [
    "WAKING",
    "WAKE_FAILED",
    "RETRY_AFTER_S",
    "Parkable",
    "Parked",
    "Waker",
    "default_waker",
    "is_waking",
]

log = logging.getLogger(__name__)

WAKING = "waking: "  # a health row's error while a wake is under way
WAKE_FAILED = "wake failed: "  # ... and after one failed: retried `grace_s` later
# What a user who can only be sent to a waking model is told to wait before trying again:
# long enough not to hammer the API, short enough that the retry usually finds it up.
RETRY_AFTER_S = 10


@runtime_checkable
class Parkable(Protocol):
    """The part of a serving backend that parks and wakes models (Kubernetes has it; a
    local vLLM process cannot be parked, only stopped)."""

    def parked(self, handle: dict[str, Any]) -> bool: ...

    def wake(self, handle: dict[str, Any]) -> int | None: ...


@dataclass(frozen=True, slots=True)
class Parked:
    """A served model whose backend says it is at zero replicas."""

    submission_id: str
    backend: str
    handle: dict[str, Any]


Opener = Callable[[str], object]


def _open_backend(name: str) -> object:
    from deployments import get_backend

    return get_backend(name)


def is_waking(error: str | None) -> bool:
    return bool(error and error.startswith(WAKING))


class Waker:
    """One per process: the backends it opened and what they last said about each model."""

    def __init__(
        self, *, opener: Opener = _open_backend, cache_s: float = 2.0, grace_s: float = 60.0
    ) -> None:
        self._opener = opener
        self.cache_s = cache_s
        self.grace_s = grace_s
        self._backends: dict[str, Parkable | None] = {}
        self._seen: dict[str, tuple[float, bool]] = {}  # submission id -> (when, parked)
        self._lock = threading.Lock()

    def _backend(self, name: str) -> Parkable | None:
        with self._lock:
            if name not in self._backends:
                try:
                    backend = self._opener(name)
                except Exception as exc:  # routing goes on without parking, never fails
                    log.warning(
                        "cannot open the %s backend to look for parked models: %s", name, exc
                    )
                    backend = None
                self._backends[name] = backend if isinstance(backend, Parkable) else None
            return self._backends[name]

    def parked(self, submission_ids: Iterable[str]) -> dict[str, Parked]:
        """The given models that their backend has parked. A backend that cannot be asked
        (API down, no configuration) counts as "not parked": the relay and the health
        probe still catch a model that does not answer."""
        ids = list(submission_ids)
        if not ids:
            return {}
        with session_scope() as session:
            rows = session.exec(
                select(Deployment)
                .where(col(Deployment.submission_id).in_(ids), col(Deployment.active).is_(True))
                .order_by(col(Deployment.id).desc())
            ).all()
        newest: dict[str, Deployment] = {}
        for dep in rows:
            newest.setdefault(dep.submission_id, dep)
        out: dict[str, Parked] = {}
        now = time.monotonic()
        for sid, dep in newest.items():
            backend = self._backend(dep.backend)
            if backend is None:
                continue
            seen = self._seen.get(sid)
            if seen is not None and now - seen[0] < self.cache_s:
                is_parked = seen[1]
            else:
                try:
                    is_parked = backend.parked(dep.handle)
                except Exception as exc:  # the API down: the relay and probes still judge it
                    log.warning("cannot tell whether %s is parked: %s", sid, exc)
                    is_parked = False
                self._seen[sid] = (now, is_parked)
            if is_parked:
                out[sid] = Parked(sid, dep.backend, dict(dep.handle))
        return out

    def wake(self, parked: Parked) -> tuple[bool, str]:
        """Wake a parked model unless someone already is; returns (whether it is waking,
        what the router's explanation says about it)."""
        sid = parked.submission_id
        now = utcnow()
        previous = _claim(sid, now=now, grace_s=self.grace_s)
        if previous is _TAKEN:
            row = _row(sid)
            note = row.error if row is not None and row.error else "being woken"
            return is_waking(note), f"asleep (scaled to zero); {note}"
        backend = self._backend(parked.backend)
        assert backend is not None  # parked() found it
        try:
            replicas = backend.wake(parked.handle)
        except Exception as exc:  # recorded, and tried again `grace_s` later
            note = f"{WAKE_FAILED}{exc}"
            _write(sid, healthy=False, error=note, at=utcnow())
            log.warning("could not wake %s: %s", sid, exc)
            return False, f"asleep (scaled to zero); {note}"
        if replicas is None:  # woken (or removed) by someone else since we looked
            assert isinstance(previous, _Prior)
            _write(sid, healthy=previous.healthy, error=previous.error, at=previous.at)
            self._seen.pop(sid, None)
            return False, "no longer parked"
        self._seen[sid] = (time.monotonic(), False)
        note = f"{WAKING}scaled from 0 to {replicas} replica{'s' if replicas > 1 else ''}"
        _write(sid, healthy=False, error=f"{note} at {now:%H:%M:%S} UTC", at=now)
        log.info("woke %s: %s", sid, note)
        return True, f"asleep (scaled to zero); {note} now"


# --------------------------------------------------------------------------- the claim


@dataclass(frozen=True, slots=True)
class _Prior:
    healthy: bool
    error: str | None
    at: datetime


_TAKEN = object()


def _row(submission_id: str) -> ModelHealth | None:
    with session_scope() as session:
        return session.exec(
            select(ModelHealth).where(col(ModelHealth.submission_id) == submission_id)
        ).first()


def _claim(submission_id: str, *, now: datetime, grace_s: float) -> _Prior | object:
    """Mark the model waking unless a wake (or a failed one) is younger than `grace_s`.
    Returns the row as it was (to put back if there turns out to be nothing to wake), or
    `_TAKEN` when another request holds the claim."""
    fresh = now - timedelta(seconds=grace_s)
    recent_wake = and_(
        or_(
            col(ModelHealth.error).startswith(WAKING),
            col(ModelHealth.error).startswith(WAKE_FAILED),
        ),
        col(ModelHealth.checked_at) >= fresh,
    )
    claim = f"{WAKING}claimed at {now:%H:%M:%S} UTC"
    for _ in range(2):
        before = _row(submission_id)
        if _is_recent_wake(before, fresh):  # the common case while it wakes: no write
            return _TAKEN
        try:
            with session_scope() as session:
                if before is None:
                    session.add(
                        ModelHealth(
                            submission_id=submission_id, healthy=False, error=claim, checked_at=now
                        )
                    )
                    return _Prior(True, None, now)
                result = session.execute(
                    update(ModelHealth)
                    .where(col(ModelHealth.submission_id) == submission_id)
                    .where(not_(recent_wake))
                    .values(healthy=False, error=claim, checked_at=now)
                )
                if getattr(result, "rowcount", 0) == 1:
                    return _Prior(before.healthy, before.error, before.checked_at)
        except IntegrityError:
            continue  # another request inserted the first row: look again
        if _is_recent_wake(_row(submission_id), fresh):
            return _TAKEN
    return _TAKEN


def _is_recent_wake(row: ModelHealth | None, fresh: datetime) -> bool:
    if row is None or not row.error:
        return False
    checked = row.checked_at.replace(tzinfo=row.checked_at.tzinfo or fresh.tzinfo)
    return row.error.startswith((WAKING, WAKE_FAILED)) and checked >= fresh


def _write(submission_id: str, *, healthy: bool, error: str | None, at: datetime) -> None:
    with session_scope() as session:
        session.execute(
            update(ModelHealth)
            .where(col(ModelHealth.submission_id) == submission_id)
            .values(healthy=healthy, error=error, checked_at=at)
        )


_default: Waker | None = None
_default_lock = threading.Lock()


def default_waker(cache_s: float) -> Waker:
    """The process's waker (its cache is worth keeping between conversations)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Waker(cache_s=cache_s)
        return _default
