"""Scheduled maintenance: the hourly cleanup and the daily archive (prefect.yaml).

Both read as plan → apply → report; what to do and how lives in `paddock.maintenance`.
A dry run plans and reports, and changes nothing. Each run leaves a table artifact (one
row per action) and a markdown artifact saying what it did or would do; an action that
failed fails the run, after the report is published, so the next run tries it again.
"""

from __future__ import annotations

from paddock.config import settings_or_exit

if __name__ == "__main__":
    settings_or_exit()  # a bad setting: one sentence, before imports read the settings

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from blocks import model_store
from paddock import bundles, maintenance
from paddock.errors import PaddockError
from paddock.maintenance import Action, ArchivePolicy, CleanupPolicy, Outcome
from paddock.models import utcnow

__all__ = ["cleanup", "archive"]


@task(name="plan-cleanup", cache_policy=NO_CACHE)
def plan_cleanup(policy: CleanupPolicy) -> list[Action]:
    return maintenance.plan_cleanup(maintenance.read_tables(), policy, now=utcnow())


@task(name="plan-archive", cache_policy=NO_CACHE)
def plan_archive(policy: ArchivePolicy) -> list[Action]:
    refs = bundles.references()
    store = maintenance.read_store(model_store().open(), (r.digest for r in refs))
    return maintenance.plan_archive(maintenance.read_tables(), refs, store, policy, now=utcnow())


@task(name="apply-plan", cache_policy=NO_CACHE)
def apply_plan(actions: list[Action], dry_run: bool, with_store: bool) -> list[Outcome]:
    store = model_store().open() if with_store and actions and not dry_run else None
    return maintenance.apply_all(actions, dry_run=dry_run, store=store)


@task(name="publish-maintenance-report", cache_policy=NO_CACHE)
def publish_report(name: str, outcomes: list[Outcome], dry_run: bool) -> None:
    suffix = " (dry run)" if dry_run else ""
    create_table_artifact(
        key=f"maintenance-{name}",
        table=maintenance.table_rows(outcomes),
        description=f"{name}{suffix}: {len(outcomes)} actions",
    )
    create_markdown_artifact(
        key=f"maintenance-{name}-report",
        markdown=maintenance.to_markdown(name, outcomes, dry_run=dry_run),
        description=f"what {name} {'would do' if dry_run else 'did'}",
    )


def _finish(name: str, outcomes: list[Outcome], dry_run: bool) -> list[dict[str, str]]:
    publish_report(name, outcomes, dry_run)
    log = get_run_logger()
    for outcome in outcomes:
        action = outcome.action
        log.info("%s %s: %s — %s", action.kind, action.target, action.reason, outcome.result)
    failed = [o for o in outcomes if o.failed]
    if failed:
        raise PaddockError(
            f"{name}: {len(failed)} of {len(outcomes)} actions failed (the next run tries "
            f"them again): " + "; ".join(f"{o.action.target}: {o.result}" for o in failed)
        )
    return maintenance.table_rows(outcomes)


@flow(name="cleanup", log_prints=True)
def cleanup(
    dry_run: bool = False, idle_hours: float | None = None, stuck_minutes: float | None = None
) -> list[dict[str, str]]:
    """Stop what should not be served, park idle models (Kubernetes: scaled to zero, woken
    on demand) or else make them inactive, fail stuck submissions.

    Unset limits come from the settings (PADDOCK_IDLE_HOURS, PADDOCK_STUCK_MINUTES).
    """
    policy = CleanupPolicy.from_settings(idle_hours=idle_hours, stuck_minutes=stuck_minutes)
    actions = plan_cleanup(policy)
    outcomes = apply_plan(actions, dry_run, with_store=False)
    return _finish("cleanup", outcomes, dry_run)


@flow(name="archive", log_prints=True)
def archive(
    dry_run: bool = False, keep: int | None = None, grace_days: float | None = None
) -> list[dict[str, str]]:
    """Move old bundles to the store's archive; delete archived ones after a grace period.

    Unset values come from the settings (PADDOCK_KEEP_BUNDLES, PADDOCK_ARCHIVE_GRACE_DAYS).
    """
    policy = ArchivePolicy.from_settings(keep=keep, grace_days=grace_days)
    actions = plan_archive(policy)
    outcomes = apply_plan(actions, dry_run, with_store=True)
    return _finish("archive", outcomes, dry_run)
