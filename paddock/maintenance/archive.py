"""The daily archive: keep the newest bundles per developer and model, move older ones to
the store's archive, delete archived ones after a grace period.

A bundle a live deployment or a pipeline uses is never archived; the applier checks that
again just before moving it, since a redeploy may have started since the plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from paddock import bundles, crud, lifecycle
from paddock.config import get_settings
from paddock.errors import IllegalTransition
from paddock.models import Status
from paddock.storage import Store

from .actions import IN_PIPELINE, Action, Kind, Outcome, skip, span
from .facts import StoreFacts, Tables

__all__ = ["ArchivePolicy", "plan_archive", "apply_archive", "apply_purge"]


@dataclass(frozen=True)
class ArchivePolicy:
    keep: int
    grace_days: float

    @classmethod
    def from_settings(
        cls, *, keep: int | None = None, grace_days: float | None = None
    ) -> ArchivePolicy:
        s = get_settings()
        return cls(
            keep=s.keep_bundles if keep is None else keep,
            grace_days=s.archive_grace_days if grace_days is None else grace_days,
        )


# --------------------------------------------------------------------------- planning


def _kept(tables: Tables, refs: Sequence[bundles.Reference], keep: int) -> dict[str, str]:
    """Per (developer, name), the digests of its newest `keep` bundles → why they stay."""
    groups: dict[tuple[str, str], list[bundles.Reference]] = {}
    for ref in refs:
        sub = tables.submissions.get(ref.submission_id)
        if sub is not None:
            groups.setdefault((sub.developer, sub.name), []).append(ref)
    kept: dict[str, str] = {}
    for (developer, name), group in groups.items():
        group.sort(key=lambda r: tables.submissions[r.submission_id].created_at, reverse=True)
        newest = list(dict.fromkeys(r.digest for r in group))[:keep]
        for digest in newest:
            kept.setdefault(digest, f"one of the newest {keep} of {developer}/{name}")
    return kept


def _protected(tables: Tables, refs: Sequence[bundles.Reference], keep: int) -> dict[str, str]:
    """Digests that must stay live → why: served, in a pipeline, or recent enough."""
    active = {d.submission_id for d in tables.deployments}
    why: dict[str, str] = {}
    for ref in refs:
        sub = tables.submissions.get(ref.submission_id)
        if sub is None:
            continue
        if sub.id in active or sub.status is Status.deployed:
            why.setdefault(ref.digest, f"served by {sub.id}")
        elif sub.status in IN_PIPELINE:
            why.setdefault(ref.digest, f"in the pipeline of {sub.id} ({sub.status})")
    for digest, reason in _kept(tables, refs, keep).items():
        why.setdefault(digest, reason)
    return why


def plan_archive(
    tables: Tables,
    refs: Sequence[bundles.Reference],
    store: StoreFacts,
    policy: ArchivePolicy,
    *,
    now: datetime,
) -> list[Action]:
    users: dict[str, list[str]] = {}
    for ref in refs:
        users.setdefault(ref.digest, []).append(ref.submission_id)
    protected = _protected(tables, refs, policy.keep)
    actions: list[Action] = []
    for digest in sorted(users):
        if digest in store.live and digest not in protected:
            names = sorted(
                {f"{s.developer}/{s.name}" for s in map(tables.submissions.get, users[digest]) if s}
            )
            reason = f"not among the newest {policy.keep} of {', '.join(names)}"
            actions.append(Action(Kind.archive, digest, reason, submissions=tuple(users[digest])))
    grace = timedelta(days=policy.grace_days)
    for digest, at in sorted(store.archived.items()):
        if now - at >= grace:
            archived = tuple(
                sid
                for sid in users.get(digest, [])
                if sid in tables.submissions and tables.submissions[sid].status is Status.archived
            )
            reason = f"archived {span((now - at).total_seconds())} ago"
            actions.append(Action(Kind.purge, digest, reason, submissions=archived))
    return actions


# --------------------------------------------------------------------------- applying


def apply_archive(action: Action, store: Store) -> Outcome:
    digest = action.target
    users = bundles.users_of(digest)
    subs = [crud.require_submission(submission_id=sid) for sid in users]
    for sub in subs:
        if sub.status is Status.deployed or Status(sub.status) in IN_PIPELINE:
            return skip(action, f"{sub.id} is {sub.status} now")
        if crud.active_deployment(submission_id=sub.id) is not None:
            return skip(action, f"{sub.id} is served now")
    if not bundles.is_live(store, digest):
        return skip(action, "no longer in the store")
    for sub in subs:
        if sub.status is not Status.archived:
            try:
                lifecycle.transition(sub.id, Status.archived, expect=sub.status)
            except IllegalTransition as exc:
                return skip(action, str(exc))
    bundles.archive(store, digest)
    return Outcome(action, "done")


def apply_purge(action: Action, store: Store) -> Outcome:
    for sid in action.submissions:
        sub = crud.get_submission(submission_id=sid)
        if sub is not None and sub.status is Status.archived:
            bundles.release(sid, store=store)
    bundles.delete_archived(store, action.target)
    return Outcome(action, "done")
