"""The feedback flow: categorize new feedback, recompute the leaderboard, show it.

Scheduled every few minutes (prefect.yaml), so a developer reads a categorized first
feedback minutes after a user gave it; also run on demand (`python -m flows.feedback`).
Every step is idempotent: categories are given once, each snapshot is complete.
"""

from __future__ import annotations

from paddock.config import settings_or_exit

if __name__ == "__main__":
    settings_or_exit()  # a bad setting: one sentence, before imports read the settings

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from paddock import leaderboard
from paddock.config import get_settings
from paddock.leaderboard import ArenaRow, LeaderboardRow

__all__ = ["feedback"]


@task(name="categorize-feedback", cache_policy=NO_CACHE)
def categorize_feedback() -> int:
    return leaderboard.categorize_new_feedback()


@task(name="compute-leaderboard", cache_policy=NO_CACHE)
def compute_leaderboard() -> tuple[list[LeaderboardRow], list[ArenaRow]]:
    settings = get_settings()
    return leaderboard.compute(
        min_votes=settings.leaderboard_min_votes,
        bootstrap_rounds=settings.leaderboard_bootstrap_rounds,
    )


@task(name="store-leaderboard", cache_policy=NO_CACHE)
def store_leaderboard(rows: list[LeaderboardRow], arena: list[ArenaRow]) -> int:
    snapshot = leaderboard.store(rows, arena)
    if snapshot.id is None:  # pragma: no cover - the database assigns it on insert
        raise AssertionError("leaderboard snapshot has no id")
    create_table_artifact(
        key="leaderboard",
        table=[
            {k: v for k, v in r.model_dump().items() if k not in ("developer", "categories")}
            for r in rows
        ],
        description=f"thumbs-up leaderboard: {len(rows)} models, {len(arena)} in the arena",
    )
    return snapshot.id


@flow(name="feedback", log_prints=True)
def feedback() -> int:
    """Categorize what users wrote and store a fresh leaderboard; returns the snapshot id."""
    categorized = categorize_feedback()
    rows, arena = compute_leaderboard()
    snapshot_id = store_leaderboard(rows, arena)
    get_run_logger().info(
        "categorized %d new feedback texts; leaderboard of %d models (snapshot %d)",
        categorized,
        len(rows),
        snapshot_id,
    )
    return snapshot_id


if __name__ == "__main__":  # `python -m flows.feedback`: one run, now
    feedback()
