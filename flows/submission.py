"""One submission, all the way from its source to users.

The flow body is the pipeline: each stage is a task (tasks/) that records itself and
retries transient faults; the stress stage is a subflow. From upload on, a failure that
survives its retries rolls the run back — the server stopped, the upload taken back — so
a failed submission leaves nothing behind.
"""

from __future__ import annotations

import sys

from paddock.config import settings_or_exit

if __name__ == "__main__":
    # The stages read the settings as they are imported (their retry policy): a bad
    # setting must end the process with one sentence before that, not a traceback.
    settings_or_exit()

from prefect import flow, get_run_logger
from prefect.events import emit_event

from flows.stress import stress_test
from paddock import crud, leases, lifecycle, timeline
from paddock.errors import IllegalTransition
from paddock.models import StageStatus, Status
from tasks.deploy import deploy
from tasks.download import download
from tasks.publish import publish
from tasks.rollback import undone_on_failure
from tasks.sanity import sanity
from tasks.serialize import serialize
from tasks.upload import upload
from tasks.warmup import warmup

__all__ = ["submission"]


@flow(name="submission", flow_run_name="submission-{submission_id}", log_prints=True)
def submission(submission_id: str) -> str:
    """Take a submission from its source to a published endpoint; returns the endpoint.

    The run holds the submission's lease throughout: a second run of the same submission
    is refused before it touches anything (LeaseHeld names the run that has it).
    """
    with leases.held(submission_id):
        try:
            snapshot = download(submission_id)
            sanity(submission_id, snapshot)
            bundle = serialize(submission_id, snapshot)
            with undone_on_failure(submission_id):
                stored = upload(submission_id, bundle)
                endpoint = deploy(submission_id, stored)
                warmup(submission_id, endpoint)
                stress_test(submission_id, endpoint)
                published = publish(submission_id, endpoint)
        except BaseException as exc:
            _record_failure(submission_id, exc)
            raise
    report = timeline.build(submission_id)
    get_run_logger().info(
        "deployed %s in %.1f s (SLA %d s)",
        published.endpoint,
        report.total_seconds,
        report.sla_seconds,
    )
    _announce(submission_id, "deployed", report)
    return published.endpoint


def _announce(submission_id: str, outcome: str, report: timeline.StatusReport) -> None:
    """A Prefect event per outcome, for automations (alerts, SLA dashboards) to match on."""
    emit_event(
        event=f"paddock.submission.{outcome}",
        resource={
            "prefect.resource.id": f"paddock.submission.{submission_id}",
            "prefect.resource.name": report.name,
        },
        payload={
            "seconds": report.total_seconds,
            "within_sla": report.within_sla,
            "failed_stage": report.failed_stage,
            "reason": report.reason,
        },
    )


def _record_failure(submission_id: str, exc: BaseException) -> None:
    runs = crud.stage_runs(submission_id=submission_id)
    failed = [r for r in runs if r.status in (StageStatus.failed, StageStatus.rejected)]
    last = failed[-1] if failed else None
    stage = last.stage if last else "pipeline"
    reason = (last.detail.get("error") if last else None) or f"{type(exc).__name__}: {exc}"
    if last is not None and last.status is StageStatus.failed and last.attempt > 1:
        reason = f"failed after {last.attempt} attempts: {reason}"
    try:
        lifecycle.transition(submission_id, Status.failed, reason=reason, failed_stage=stage)
    except IllegalTransition:
        return  # deactivated or torn down meanwhile: that status stands
    _announce(submission_id, "failed", timeline.build(submission_id))


def _never_started(submission_id: str, exc: BaseException) -> None:
    """The flow run itself could not start (Prefect did not come up): without this the
    submission would sit in `submitted` forever, with nobody told why."""
    try:
        lifecycle.transition(
            submission_id,
            Status.failed,
            reason=f"the flow run could not start: {type(exc).__name__}: {exc}",
            failed_stage="pipeline",
            expect=Status.submitted,
        )
    except IllegalTransition:
        pass  # it started: the flow recorded its own outcome


if __name__ == "__main__":  # `python -m flows.submission ID`: what `paddock submit` spawns
    try:
        submission(sys.argv[1])
    except leases.LeaseHeld as exc:
        # Another run has it under way: that run's status stands; say who holds it.
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(3) from None
    except Exception as exc:
        _never_started(sys.argv[1], exc)
        raise
