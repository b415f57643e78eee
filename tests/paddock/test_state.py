"""State: tables, the lifecycle and its race safety, on SQLite and on a real Postgres."""

from __future__ import annotations

import threading

import pytest

from paddock import crud, lifecycle
from paddock.errors import IllegalTransition, NotFound
from paddock.models import Status


def _new() -> str:
    return crud.create_submission(
        developer="dev",
        source="org/model",
        display_name="model",
        generation_params={"temperature": 0.7},
    ).id


def test_submission_round_trip(database: str) -> None:
    sid = _new()
    sub = crud.require_submission(submission_id=sid)
    assert sub.status == Status.submitted
    assert sub.generation_params == {"temperature": 0.7}
    crud.set_resolved_revision(submission_id=sid, revision="abc123")
    crud.add_artifacts(submission_id=sid, artifacts=[("s3://b/k", 10, "f" * 64)])
    run = crud.start_stage(submission_id=sid, stage="download")
    crud.finish_stage(run_id=run.id, status="succeeded", detail={"output": {"x": 1}})
    assert crud.require_submission(submission_id=sid).resolved_revision == "abc123"
    assert [a.uri for a in crud.list_artifacts(submission_id=sid)] == ["s3://b/k"]
    assert crud.last_success(submission_id=sid, stage="download").detail["output"] == {"x": 1}
    assert crud.get_submission(submission_id="nope") is None
    with pytest.raises(NotFound):
        crud.require_submission(submission_id="nope")


def test_the_pipeline_walks_forward_and_refuses_jumps(database: str) -> None:
    sid = _new()
    for status in lifecycle.PIPELINE[1:]:
        lifecycle.transition(sid, status)
    assert crud.require_submission(submission_id=sid).status == Status.deployed
    with pytest.raises(IllegalTransition):
        lifecycle.transition(sid, Status.downloading)
    lifecycle.transition(sid, Status.inactive)
    lifecycle.transition(sid, Status.torndown)
    lifecycle.transition(sid, Status.archived)
    with pytest.raises(IllegalTransition):
        lifecycle.transition(sid, Status.deploying)


def test_failed_records_stage_and_reason_and_a_rerun_clears_them(database: str) -> None:
    sid = _new()
    lifecycle.transition(sid, Status.downloading)
    lifecycle.transition(sid, Status.failed, reason="hub down", failed_stage="download")
    sub = crud.require_submission(submission_id=sid)
    assert (sub.status, sub.reason, sub.failed_stage) == (Status.failed, "hub down", "download")
    lifecycle.transition(sid, Status.checking)  # a re-run resumes further down
    sub = crud.require_submission(submission_id=sid)
    assert sub.reason is None and sub.failed_stage is None


def test_unknown_submission(database: str) -> None:
    with pytest.raises(NotFound):
        lifecycle.transition("missing", Status.downloading)


def _race(sid: str, targets: list[Status], expect: Status) -> tuple[list[Status], int]:
    """Start len(targets) threads at once, each moving `sid` from `expect`; (wins, losses)."""
    barrier = threading.Barrier(len(targets))
    wins: list[Status] = []
    losses: list[Exception] = []

    def racer(target: Status) -> None:
        barrier.wait()
        try:
            lifecycle.transition(sid, target, expect=expect)
            wins.append(target)
        except IllegalTransition as exc:
            losses.append(exc)

    threads = [threading.Thread(target=racer, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return wins, len(losses)


def test_of_racers_from_one_status_exactly_one_wins(database: str) -> None:
    """Eight users deactivate or tear down the model they all saw deployed: one wins."""
    sid = _new()
    for status in lifecycle.PIPELINE[1:]:
        lifecycle.transition(sid, status)

    wins, losses = _race(sid, [Status.inactive, Status.torndown] * 4, expect=Status.deployed)

    assert len(wins) == 1 and losses == 7
    assert crud.require_submission(submission_id=sid).status == wins[0]


def test_of_runs_starting_one_submission_exactly_one_wins(database: str) -> None:
    sid = _new()

    wins, losses = _race(sid, [Status.downloading] * 8, expect=Status.submitted)

    assert wins == [Status.downloading] and losses == 7


def test_expect_names_what_changed(database: str) -> None:
    sid = _new()
    lifecycle.transition(sid, Status.downloading)
    with pytest.raises(IllegalTransition, match="is downloading, no longer submitted"):
        lifecycle.transition(sid, Status.failed, expect=Status.submitted)
