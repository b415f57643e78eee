"""The hourly cleanup on real processes: what it stops, what it leaves, and that a second
run (or a dry run) changes nothing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import pytest

from paddock import crud, maintenance
from paddock.models import StageStatus, Status, utcnow
from tests.maintenance.conftest import Serve
from tests.maintenance.seeding import (
    active_deployments,
    chat,
    set_endpoint,
    stage_running,
    status_of,
    submission,
)
from tests.utils.vllm import pid_alive

pytestmark = pytest.mark.usefixtures("prefect_harness")

HOUR = 3600.0


@dataclass
class World:
    failed: str
    torndown: str
    archived: str
    idle: str
    busy: str
    stuck: str
    fresh: str
    pids: dict[str, int]


@pytest.fixture
def world(serve: Serve) -> World:
    """One of each case, each with a live server where it has one."""
    failed = submission(Status.failed, name="broken")
    torndown = submission(Status.torndown, name="gone")
    archived = submission(Status.archived, name="old")
    idle = submission(Status.deployed, name="idle", age_s=30 * HOUR)
    busy = submission(Status.deployed, name="busy", age_s=30 * HOUR)
    stuck = submission(Status.downloading, name="stuck", age_s=1.5 * HOUR)
    fresh = submission(Status.serializing, name="fresh", age_s=2 * HOUR)
    pids = {sid: serve(sid) for sid in (failed, torndown, archived, idle, busy)}
    for sid in (idle, busy):  # published at the deployment's endpoint
        set_endpoint(sid, active_deployments(sid)[0].endpoint)
    chat(idle, age_s=25 * HOUR)
    chat(busy, age_s=60)
    stage_running(stuck, "download", age_s=1.5 * HOUR)
    stage_running(fresh, "serialize", age_s=60)
    return World(failed, torndown, archived, idle, busy, stuck, fresh, pids)


def _statuses(w: World) -> dict[str, Status]:
    ids = (w.failed, w.torndown, w.archived, w.idle, w.busy, w.stuck, w.fresh)
    return {sid: status_of(sid) for sid in ids}


def _artifact_keys() -> list[str]:
    from prefect.client.orchestration import get_client

    async def read() -> list[str]:
        async with get_client() as client:
            return [a.key for a in await client.read_artifacts() if a.key]

    return asyncio.run(read())


def test_cleanup_stops_what_must_not_serve_and_a_second_run_does_nothing(world: World) -> None:
    from flows.maintenance import cleanup

    rows = cleanup(idle_hours=24, stuck_minutes=60)

    by_target = {(r["action"], r["target"]): r for r in rows}
    assert set(by_target) == {
        ("stop", world.failed),
        ("stop", world.torndown),
        ("reap", world.archived),
        ("idle", world.idle),
        ("expire", world.stuck),
    }
    assert all(r["result"] == "done" for r in rows)
    for sid in (world.failed, world.torndown, world.archived, world.idle):
        assert not pid_alive(world.pids[sid]), f"{sid}'s server should be stopped"
        assert active_deployments(sid) == []
    assert pid_alive(world.pids[world.busy]) and active_deployments(world.busy)
    idle = crud.require_submission(submission_id=world.idle)
    assert idle.status == Status.inactive and (idle.reason or "").startswith("idle: no chat")
    stuck = crud.require_submission(submission_id=world.stuck)
    assert stuck.status == Status.failed and stuck.failed_stage == "download"
    assert stuck.reason == "expired: no progress for 90 min (stuck in download)"
    download = crud.stage_runs(submission_id=world.stuck)[-1]
    assert download.status == StageStatus.failed and download.detail["error"] == stuck.reason
    assert status_of(world.fresh) == Status.serializing
    assert {"maintenance-cleanup", "maintenance-cleanup-report"} <= set(_artifact_keys())

    assert cleanup(idle_hours=24, stuck_minutes=60) == []


def test_a_dry_run_changes_nothing(world: World) -> None:
    from flows.maintenance import cleanup

    before = _statuses(world)

    rows = cleanup(dry_run=True, idle_hours=24, stuck_minutes=60)

    assert len(rows) == 5 and {r["result"] for r in rows} == {"dry run"}
    assert _statuses(world) == before
    assert all(pid_alive(pid) for pid in world.pids.values())
    assert all(active_deployments(sid) for sid in world.pids)
    assert crud.stage_runs(submission_id=world.stuck)[-1].status == StageStatus.running


def test_a_submission_stuck_without_a_stage_run_names_its_status_stage() -> None:
    from flows.maintenance import cleanup

    deploying = submission(Status.deploying, age_s=3 * HOUR)  # a redeploy that never ran
    never = submission(Status.submitted, age_s=3 * HOUR)  # a run that never started

    cleanup(stuck_minutes=90)

    assert crud.require_submission(submission_id=deploying).reason == (
        "expired: no progress for 3.0 h (stuck in deploy)"
    )
    assert crud.require_submission(submission_id=never).failed_stage == "pipeline"


def test_an_action_whose_premise_changed_is_skipped(serve: Serve) -> None:
    """The plan saw the model idle; a user chatted before the plan was applied."""
    sid = submission(Status.deployed, age_s=30 * HOUR)
    serve(sid)
    plan = maintenance.plan_cleanup(
        maintenance.read_tables(),
        maintenance.CleanupPolicy(idle_hours=24, stuck_minutes=60),
        now=utcnow(),
    )
    chat(sid, age_s=0)

    [outcome] = maintenance.apply_all(plan, dry_run=False)

    assert outcome.result.startswith("skipped: chatted with")
    assert status_of(sid) == Status.deployed and active_deployments(sid)


def test_of_a_deployed_submissions_deployments_only_the_superseded_one_is_reaped() -> None:
    now = utcnow()
    sub = maintenance.SubmissionFacts(
        id="s1",
        developer="alice",
        name="smol",
        status=Status.deployed,
        created_at=now,
        updated_at=now,
        endpoint="http://a",
        last_chat=now,
    )
    deps = [
        maintenance.DeploymentFacts(1, "s1", "local", "http://old", now - timedelta(hours=1)),
        maintenance.DeploymentFacts(2, "s1", "local", "http://a", now),
    ]
    plan = maintenance.plan_cleanup(
        maintenance.Tables({"s1": sub}, deps),
        maintenance.CleanupPolicy(idle_hours=24, stuck_minutes=60),
        now=now,
    )
    assert [(a.kind, a.deployment_id, a.reason) for a in plan] == [
        (maintenance.Kind.reap, 1, "superseded by deployment 2")
    ]
