"""The SLA clock on the database alone: when it starts, what stops it, what people see."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import col

from paddock import crud, lifecycle, sla, timeline
from paddock.api.schemas import StatusPublic
from paddock.db import session_scope
from paddock.errors import NotFound
from paddock.models import SlaRecord, StageStatus, Status, utcnow
from paddock.stack import BREACH_AUTOMATION, NOTIFY_AUTOMATION
from paddock.stack.automations import automation_specs


def _submission() -> str:
    return crud.create_submission(
        developer="dev", source="org/model", display_name=f"m-{uuid.uuid4().hex[:6]}"
    ).id


def _move_deadline(submission_id: str, seconds_from_now: float, at: datetime | None = None) -> None:
    """As if the submission had been accepted earlier (deadline `at`, or relative to now)."""
    deadline = at or utcnow() + timedelta(seconds=seconds_from_now)
    with session_scope() as session:
        session.connection().execute(
            update(SlaRecord)
            .where(col(SlaRecord.submission_id) == submission_id)
            .values(deadline=deadline, accepted_at=deadline - timedelta(seconds=300))
        )


def _stage(submission_id: str, name: str, status: StageStatus | None = None) -> int:
    new = lifecycle.stage_status(name)
    if new is not None:
        lifecycle.transition(submission_id, new)
    row = crud.start_stage(submission_id=submission_id, stage=name)
    assert row.id is not None
    if status is not None:
        crud.finish_stage(run_id=row.id, status=status, detail={"output": {}})
    return row.id


def test_the_clock_starts_at_acceptance_and_only_then() -> None:
    sub_id = _submission()
    assert sla.open_clock(sub_id)
    record = sla.get(sub_id)
    assert record is not None
    assert record.seconds == 300
    assert (record.deadline - record.accepted_at).total_seconds() == 300
    assert not sla.open_clock(sub_id)  # a resume keeps the deadline set at acceptance

    started = _submission()
    _stage(started, "download")
    assert not sla.open_clock(started)  # begun before clocks were kept: none
    assert sla.view(started) is None
    assert timeline.build(started).sla is None


def test_time_left_and_where_it_went_while_on_time() -> None:
    sub_id = _submission()
    sla.open_clock(sub_id)
    view = sla.view(sub_id)
    assert view is not None
    assert view.state == "on_time"
    assert view.seconds_late is None
    assert view.seconds_left is not None and 299 < view.seconds_left <= 300
    assert view.slowest_stage == sla.QUEUED
    assert "left of the 300 s SLA" in sla.describe(view.as_dict())


def test_an_alarm_on_a_late_run_records_one_breach_in_the_stage_under_way() -> None:
    sub_id = _submission()
    sla.open_clock(sub_id)
    _stage(sub_id, "download", StageStatus.succeeded)
    _stage(sub_id, "sanity")
    assert not sla.record_breach(sub_id).recorded  # deadline ahead: nothing to record

    _move_deadline(sub_id, -5)
    view = sla.view(sub_id)
    assert view is not None and view.state == "late"
    assert view.seconds_late is not None and view.seconds_late >= 5

    first = sla.record_breach(sub_id)
    assert first.recorded
    assert first.view.state == "breached"
    assert first.view.breach_stage == "sanity"
    again = sla.record_breach(sub_id)
    assert not again.recorded
    assert again.view.breached_at == first.view.breached_at
    assert "SLA breached in sanity" in sla.describe(again.view.as_dict())


def test_a_run_that_ended_in_time_is_met_even_when_the_alarm_comes_later() -> None:
    sub_id = _submission()
    sla.open_clock(sub_id)
    _stage(sub_id, "download", StageStatus.rejected)
    lifecycle.transition(sub_id, Status.failed, reason="no", failed_stage="download")
    time.sleep(0.2)
    _move_deadline(sub_id, -0.1)  # the run ended just before the deadline; the alarm after
    breach = sla.record_breach(sub_id)
    assert not breach.recorded
    assert breach.view.state == "met"
    assert breach.view.seconds_left is not None
    # In time, but told as the failure it was: "met the SLA" would read as a success.
    told = sla.describe(breach.view.as_dict(), "failed")
    assert told.startswith("failed after ") and "within the 300 s SLA" in told
    assert "met the" not in told


def test_a_run_seen_to_end_late_is_breached_at_the_stage_it_was_in_at_the_deadline() -> None:
    sub_id = _submission()
    sla.open_clock(sub_id)
    row = _stage(sub_id, "download")
    time.sleep(0.2)
    crud.finish_stage(run_id=row, status=StageStatus.succeeded, detail={"output": {}})
    _stage(sub_id, "sanity", StageStatus.rejected)
    lifecycle.transition(sub_id, Status.failed, reason="no", failed_stage="sanity")
    started = crud.stage_runs(submission_id=sub_id)[0].started_at.replace(tzinfo=UTC)
    _move_deadline(sub_id, 0, at=started + timedelta(seconds=0.1))  # mid-download
    view = sla.view(sub_id)
    assert view is not None
    assert view.state == "breached"
    assert view.breach_stage == "download"
    assert view.seconds_late is not None and view.seconds_late > 0


def test_no_clock_is_not_found_for_an_alarm() -> None:
    with pytest.raises(NotFound):
        sla.record_breach(_submission())


def test_status_json_mirrors_the_clock_exactly() -> None:
    sub_id = _submission()
    sla.open_clock(sub_id)
    _stage(sub_id, "download")
    expected = json.loads(json.dumps(timeline.build(sub_id).as_dict()))
    assert expected["sla"]["state"] == "on_time"
    assert StatusPublic.model_validate(expected).model_dump(mode="json") == expected


def test_summary_counts_and_slowest_stages() -> None:
    met = _submission()
    sla.open_clock(met)
    _stage(met, "download", StageStatus.rejected)
    lifecycle.transition(met, Status.failed, reason="no", failed_stage="download")
    late = _submission()
    sla.open_clock(late)
    _stage(late, "download")
    _move_deadline(late, -1)
    sla.record_breach(late)

    summary = sla.summary().as_dict()
    assert summary["met"] >= 1 and summary["breached"] >= 1
    assert summary["breach_stages"].get("download", 0) >= 1
    stages = [s["stage"] for s in summary["slowest_stages"]]
    assert {"queued", "download"} <= set(stages)
    means = [s["mean_seconds"] for s in summary["slowest_stages"]]
    assert means == sorted(means, reverse=True)


def test_automations_are_filled_in_for_the_running_stack() -> None:
    from prefect.events.schemas.automations import AutomationCore

    deployment, hook = uuid.uuid4(), uuid.uuid4()
    specs = automation_specs(
        deployment_id=deployment, sla_seconds=42, hook_block=hook, notify_block=None
    )
    assert [s["name"] for s in specs] == [BREACH_AUTOMATION]
    alarm = AutomationCore(**specs[0])
    assert alarm.trigger.within.total_seconds() == 42  # type: ignore[union-attr]
    assert alarm.actions[0].block_document_id == hook  # type: ignore[union-attr]
    related = specs[0]["trigger"]["match_related"]
    assert related["prefect.resource.id"] == f"prefect.deployment.{deployment}"

    notify = uuid.uuid4()
    specs = automation_specs(
        deployment_id=deployment, sla_seconds=42, hook_block=hook, notify_block=notify
    )
    assert [s["name"] for s in specs] == [BREACH_AUTOMATION, NOTIFY_AUTOMATION]
    assert AutomationCore(**specs[1]).actions[0].block_document_id == notify  # type: ignore[union-attr]


def test_the_hook_secret_is_created_private_when_none_is_configured(paddock_home: Path) -> None:
    secret = sla.ensure_hook_secret()
    assert len(secret) == 64
    assert sla.hook_secret() == secret
    assert (paddock_home / sla.HOOK_SECRET_FILE).stat().st_mode & 0o077 == 0
