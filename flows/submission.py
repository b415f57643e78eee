"""One submission, all the way from its source to users.

The flow body is the pipeline: each stage is a task (tasks/) that records itself and
retries transient faults; the stress stage is a subflow. Once the static checks pass,
the server gets a head start (a local backend takes the stack's spare vLLM interpreter,
or starts one that imports meanwhile). Stages that need nothing from the main line run
beside it (tasks/alongside.py: one that fails stops the deploy): the runtime checks
beside serialize, upload and deploy, joined before warm-up, whose parity check needs
their reference; and — when the server maps the bundle this run serialized rather than
streaming it back from S3 (tasks/deploy.py `maps_run_copy`) — the upload beside deploy
and warm-up, joined before the stress gate measures. From upload on, a failure that
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
from paddock import crud, leases, lifecycle, serving, timeline
from paddock.contracts import StoredBundle
from paddock.errors import IllegalTransition, Rejected
from paddock.models import StageStatus, Status
from tasks.alongside import Alongside, Side
from tasks.deploy import deploy, maps_run_copy
from tasks.download import download
from tasks.publish import publish
from tasks.rollback import undone_on_failure
from tasks.runtime import discard_refused, runtime
from tasks.sanity import sanity
from tasks.serialize import serialize
from tasks.upload import upload, upload_beside
from tasks.warmup import warmup

__all__ = ["submission"]


@flow(name="submission", flow_run_name="submission-{submission_id}", log_prints=True)
def submission(submission_id: str) -> str:
    """Take a submission from its source to a published endpoint; returns the endpoint.

    The run holds the submission's lease throughout: a second run of the same submission
    is refused before it touches anything (LeaseHeld names the run that has it).
    """
    with leases.held(submission_id):
        sides = Alongside(submission_id)
        try:
            snapshot = download(submission_id)
            sanity(submission_id, snapshot)
            serving.head_start(submission_id)  # a spare vLLM interpreter for the server
            checks = sides.start(runtime, snapshot)
            bundle = sides.beside(serialize, submission_id, snapshot)
            with undone_on_failure(submission_id, once_ended=sides.settle):
                storing: Side[StoredBundle] | None = None
                if maps_run_copy():  # the server maps this bundle: store it meanwhile
                    storing = sides.start(upload_beside, bundle)
                    endpoint = sides.beside(deploy, submission_id, bundle)
                else:  # the server reads the store: the bundle must be there first
                    stored = sides.beside(upload, submission_id, bundle)
                    endpoint = sides.beside(deploy, submission_id, stored)
                checks.join()  # warm-up's parity check needs the reference
                sides.beside(warmup, submission_id, endpoint)
                if storing is not None:  # none of the upload's load in the gate's
                    storing.join()  # figures, and nothing published that is not stored
                stress_test(submission_id, endpoint)
                published = publish(submission_id, endpoint)
        except leases.LeaseLost:
            sides.settle()  # waited for, not undone: the work dir is the new run's
            raise  # another run took the submission over: its status is that run's to set
        except BaseException as exc:
            reason = _settled(submission_id, sides, exc)
            _record_failure(submission_id, reason, sides)
            if reason is not exc:
                raise reason from exc
            raise
        finally:
            serving.drop_head_start(submission_id)
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


def _settled(submission_id: str, sides: Alongside, exc: BaseException) -> BaseException:
    """The failure to raise: the side stage's that failed first, if one did (the main
    line's own failure is then its doing, a deploy stopped for it), else ``exc``. The side
    stages are waited for either way, and a model the checks refused leaves nothing on
    disk."""
    failures = sides.settle()
    if isinstance(failures.get(runtime.name), Rejected):
        discard_refused(submission_id)
    owner = sides.owner
    if owner is not None and owner in failures and isinstance(exc, Exception):
        return failures[owner]
    return exc


def _record_failure(submission_id: str, exc: BaseException, sides: Alongside) -> None:
    """Fail the submission with the reason a person needs: the last failed stage of the
    side that failed first — the side stage that owns the failure, else the main line (a
    side stage may also fail after the main line did, and is not the reason then)."""
    runs = crud.stage_runs(submission_id=submission_id)
    failed = [r for r in runs if r.status in (StageStatus.failed, StageStatus.rejected)]
    owner = sides.owner
    if owner is not None:
        failed = [r for r in failed if r.stage == owner]
    else:
        failed = [r for r in failed if r.stage not in sides.names]
    last = failed[-1] if failed else None
    stage = last.stage if last else "pipeline"
    reason = (last.detail.get("error") if last else None) or f"{type(exc).__name__}: {exc}"
    if last is not None and last.status is StageStatus.failed and last.attempt > 1:
        reason = f"failed after {last.attempt} attempts: {reason}"
    try:
        lifecycle.transition(submission_id, Status.failed, reason=reason, failed_stage=stage)
    except IllegalTransition:
        sub = crud.require_submission(submission_id=submission_id)
        if sub.status != Status.failed or sub.failed_stage != stage:
            return  # deactivated or torn down meanwhile: that status stands
        # a side stage's watcher failed it already, to stop the deploy: still announce it
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
