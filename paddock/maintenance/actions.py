"""What a maintenance plan is made of: actions, and what became of each.

An action is plain data, decided by a planner and carried to the applier (a Prefect task
boundary between them), so it names its target by id and keeps what the plan saw
(`expect`, `seen`): the applier checks that premise again before acting.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from paddock import lifecycle
from paddock.models import Status

__all__ = ["Kind", "Action", "Outcome", "STOPPED", "IN_PIPELINE", "span", "skip", "moved_on"]

# Statuses whose submission must not be served any more (the user or the flow said so).
STOPPED: frozenset[Status] = frozenset({Status.failed, Status.inactive, Status.torndown})
# Statuses a flow run still moves on from: a stuck one is expired, its bundle is in use.
IN_PIPELINE: tuple[Status, ...] = (Status.submitted, *lifecycle.WORKING)


class Kind(enum.StrEnum):
    stop = "stop"  # a failed, inactive or torn-down submission is still served
    reap = "reap"  # a deployment its (settled) submission no longer uses
    idle = "idle"  # deployed, nobody chatted for a while: made inactive
    park = "park"  # idle too, on a backend that parks it: scaled to zero, still deployed
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
    seen: datetime | None = None  # the latest activity the plan saw (idle, park, expire)


@dataclass(frozen=True)
class Outcome:
    action: Action
    result: str  # "done", "dry run", "skipped: …" or "error: …"

    @property
    def failed(self) -> bool:
        return self.result.startswith("error")


def skip(action: Action, why: str) -> Outcome:
    return Outcome(action, f"skipped: {why}")


def moved_on(action: Action, last: datetime | None) -> bool:
    """Something happened after the activity the plan judged by (a chat, a stage)."""
    return last is not None and action.seen is not None and last > action.seen


def span(seconds: float) -> str:
    """A duration as a reason states it: minutes, hours or days, whichever reads best."""
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
