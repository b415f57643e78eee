"""Doing a plan: each action by the applier of its kind, one failure never stopping the rest."""

from __future__ import annotations

from collections.abc import Sequence

from paddock.errors import NotFound
from paddock.storage import Store

from .actions import Action, Kind, Outcome, skip
from .archive import apply_archive, apply_purge
from .cleanup import apply_expire, apply_idle, apply_park, apply_stop

__all__ = ["apply", "apply_all"]


def apply(action: Action, *, store: Store | None = None) -> Outcome:
    """Do one action if its premise still holds; an error is reported, not raised, so one
    stuck server does not keep the rest of the plan from being done."""
    try:
        if action.kind in (Kind.stop, Kind.reap):
            return apply_stop(action)
        if action.kind is Kind.idle:
            return apply_idle(action)
        if action.kind is Kind.park:
            return apply_park(action)
        if action.kind is Kind.expire:
            return apply_expire(action)
        if store is None:
            raise ValueError(f"a {action.kind} action needs the model store")
        if action.kind is Kind.archive:
            return apply_archive(action, store)
        return apply_purge(action, store)
    except NotFound as exc:
        return skip(action, str(exc))
    except Exception as exc:
        return Outcome(action, f"error: {type(exc).__name__}: {exc}")


def apply_all(
    actions: Sequence[Action], *, dry_run: bool, store: Store | None = None
) -> list[Outcome]:
    if dry_run:
        return [Outcome(a, "dry run") for a in actions]
    return [apply(a, store=store) for a in actions]
