"""A run whose lease is taken over while it still lives stops at its next stage.

The run uploads through the faulty proxy to the real moto S3, which holds the upload
while another holder takes the lease over (as a run that found it stale would); the
upload is then let through. The old run must stop before its next stage with LeaseLost,
and leave the submission's status, its upload and its lease to the new holder.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect import flow
from sqlalchemy import update
from sqlmodel import col

from paddock import crud, leases
from paddock.contracts import Bundle, Endpoint, StoredBundle
from paddock.db import session_scope
from paddock.errors import LeaseLost
from paddock.models import RunLease, StageStatus, Status, utcnow
from paddock.testkit.faulty_proxy import FaultyProxy
from tasks.rollback import undone_on_failure
from tasks.stage import stage
from tasks.upload import upload
from tests.hardening.conftest import Hardening
from tests.hardening.test_transfer_faults import _bundle, _serialized, s3_proxy  # noqa: F401

DEPLOYED: list[str] = []


@stage("deploy", retries=0)
def deploy_stand_in(submission_id: str, stored: StoredBundle) -> Endpoint:
    """Where a real deploy would start vLLM: recorded, so a run that goes on is seen."""
    DEPLOYED.append(submission_id)
    return Endpoint(url="http://127.0.0.1:9", backend="local", model="m")


@flow
def leased_run(submission_id: str, bundle: Bundle) -> Endpoint:
    """The submission flow's shape from upload on: lease held, undone on failure."""
    with leases.held(submission_id), undone_on_failure(submission_id):
        stored = upload(submission_id, bundle)
        return deploy_stand_in(submission_id, stored)


def _take_over(submission_id: str) -> str:
    """What another run does when it finds the lease stale: take it over."""
    with session_scope() as session:
        session.connection().execute(
            update(RunLease)
            .where(col(RunLease.submission_id) == submission_id)
            .values(heartbeat_at=utcnow() - timedelta(days=1))
        )
    return leases.acquire(submission_id, holder="elsewhere:4242:newrun00")


def test_a_run_that_lost_its_lease_stops_at_its_next_stage_and_touches_nothing(
    s3: Any,
    s3_proxy: tuple[FaultyProxy, str],  # noqa: F811
    tmp_path: Path,
    hardening: Hardening,
) -> None:
    proxy, prefix = s3_proxy
    proxy.hold(method="PUT", path="model.tensors")
    bundle = _bundle(tmp_path / "bundle")
    sid = _serialized("lease-lost")
    outcome: list[BaseException | Endpoint] = []

    def run() -> None:
        try:
            outcome.append(leased_run(sid, bundle))
        except BaseException as exc:
            outcome.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    try:
        assert proxy.holding.wait(120), "the upload never reached the store"
        new_holder = _take_over(sid)
    finally:
        proxy.release()
        runner.join(120)

    assert len(outcome) == 1 and isinstance(outcome[0], LeaseLost), outcome
    assert "lost its lease to pid 4242 on elsewhere" in str(outcome[0])
    assert DEPLOYED == [], "no stage may start after the lease is lost"
    runs = {r.stage: r.status for r in crud.stage_runs(submission_id=sid)}
    assert runs == {"upload": StageStatus.succeeded}, runs
    # Nothing rolled back or recorded over the new holder's head.
    sub = crud.require_submission(submission_id=sid)
    assert sub.status == Status.uploading and sub.failed_stage is None
    assert crud.list_artifacts(submission_id=sid), "the upload's references were kept"
    listing = s3.client().list_objects_v2(Bucket="models", Prefix=prefix)
    assert any(o["Key"].endswith("/model.tensors") for o in listing.get("Contents", []))
    lease = leases.holder_of(sid)
    assert lease is not None and lease.holder == new_holder, "the old run released nothing"
    leases.release(sid, new_holder)
    hardening.record(
        category="race",
        kind="run's lease taken over while it is still uploading",
        source="any",
        stage="deploy",
        outcome="stopped (LeaseLost)",
        reason=(
            "the upload finished, then the old run stopped before deploy: no rollback, no "
            "status change, its lease row left to the new holder"
        ),
    )
