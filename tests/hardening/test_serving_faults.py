"""The model server dies under the pipeline: during warm-up, and during the stress test.

A real vLLM of the tiny model is started by the real deploy stage (one start per case),
and its process group is SIGKILLed once the stage under test is under way. The stage
must fail (after its retries), the run must be rolled back — deployment row closed,
upload reference released — and nothing of the server may be left running.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest
from prefect import flow

from deployments.processes import group_members
from flows.stress import stress_test
from paddock import crud, lifecycle
from paddock.contracts import StoredBundle
from paddock.models import StageStatus, Status
from paddock.stress import profiles
from tasks.deploy import deploy
from tasks.download import download
from tasks.rollback import undone_on_failure
from tasks.runtime import runtime
from tasks.sanity import sanity
from tasks.serialize import serialize
from tasks.upload import upload
from tasks.warmup import warmup
from tests.hardening.conftest import Hardening
from tests.utils.blocks import use_hub, use_s3_store, use_serving
from tests.utils.vllm import needs_vllm, pid_alive

pytestmark = [pytest.mark.vllm, needs_vllm]
PREFIX = "serving-faults"


@pytest.fixture(scope="module")
def prepared(prefect_harness: None, hub: Any, s3: Any) -> tuple[str, StoredBundle]:
    """The tiny model checked, serialized and uploaded once, by the real stages; its
    submission keeps holding the bundle, so the cases' rollbacks release only theirs."""
    use_hub(hub, s3)
    use_s3_store(s3, PREFIX)
    use_serving()
    sub = crud.create_submission(
        developer="faults", source="paddock-test/tiny", display_name="prep", requested_revision="v1"
    )
    snapshot = download(sub.id)
    sanity(sub.id, snapshot)
    runtime(sub.id, snapshot)  # the greedy reference warm-up's parity check compares with
    stored = upload(sub.id, serialize(sub.id, snapshot))
    return sub.id, stored


def _uploaded(prepared: tuple[str, StoredBundle], name: str) -> str:
    """A submission whose run has just uploaded the prepared bundle."""
    prep, _stored = prepared
    sid = crud.create_submission(
        developer="faults", source="paddock-test/tiny", display_name=name
    ).id
    for status in lifecycle.PIPELINE[1 : lifecycle.PIPELINE.index(Status.uploading) + 1]:
        lifecycle.transition(sid, status)
    reference = crud.require_submission(submission_id=prep).reference
    assert reference, "the runtime checks recorded no reference"
    crud.set_reference(submission_id=sid, reference=reference)
    crud.add_artifacts(
        submission_id=sid,
        artifacts=[(a.uri, a.size, a.sha256) for a in crud.list_artifacts(submission_id=prep)],
    )
    return sid


@flow
def serve_and_test(submission_id: str, stored: StoredBundle) -> None:
    """The submission flow from deploy on: deploy, warm up, stress; undone on failure."""
    with undone_on_failure(submission_id):
        endpoint = deploy(submission_id, stored)
        warmup(submission_id, endpoint)
        stress_test(submission_id, endpoint)


class Killer:
    """Kills the submission's server group once ``stage`` has started (and ``after``
    seconds more); remembers the handle it killed."""

    def __init__(self, submission_id: str, stage: str, *, after: float = 0.0) -> None:
        self.submission_id, self.stage, self.after = submission_id, stage, after
        self.handle: dict[str, Any] | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not self.done.is_set():
            runs = crud.stage_runs(submission_id=self.submission_id)
            if any(r.stage == self.stage for r in runs):
                time.sleep(self.after)
                dep = crud.active_deployment(submission_id=self.submission_id)
                if dep is not None:
                    self.handle = dict(dep.handle)
                    os.killpg(int(self.handle["pgid"]), signal.SIGKILL)
                break
            time.sleep(0.02)
        self.done.set()

    def join(self) -> None:
        self.done.set()
        self._thread.join(10)


def _run_killed(sid: str, stored: StoredBundle, stage: str, after: float) -> tuple[Any, Killer]:
    killer = Killer(sid, stage, after=after)
    raised: BaseException | None = None
    try:
        serve_and_test(sid, stored)
    except BaseException as exc:  # what the flow ends with is the test's to check
        raised = exc
    finally:
        killer.join()
    return raised, killer


def _assert_nothing_left(sid: str, killer: Killer) -> None:
    assert killer.handle is not None, "the server was never killed"
    pid, pgid = int(killer.handle["pid"]), int(killer.handle["pgid"])
    assert not pid_alive(pid) and group_members(pgid) == [], "a server process survived"
    assert crud.active_deployment(submission_id=sid) is None, "the deployment row is open"
    assert crud.list_artifacts(submission_id=sid) == [], "the upload was not released"


def _attempts(submission_id: str, name: str) -> list[StageStatus]:
    return [r.status for r in crud.stage_runs(submission_id=submission_id) if r.stage == name]


def test_vllm_dying_during_warmup_fails_the_stage_and_rolls_the_run_back(
    prepared: tuple[str, StoredBundle], hardening: Hardening
) -> None:
    sid = _uploaded(prepared, "dies-in-warmup")

    raised, killer = _run_killed(sid, prepared[1], "warmup", after=0.0)

    assert raised is not None and "died during warm-up" in str(raised), raised
    assert _attempts(sid, "warmup") == [StageStatus.failed] * 3  # 1 + the stage's 2 retries
    assert _attempts(sid, "stress") == []
    _assert_nothing_left(sid, killer)
    hardening.record(
        category="fault",
        kind="vLLM SIGKILLed as warm-up starts",
        source="any",
        stage="warmup",
        outcome="retried, then rolled back",
        reason=(
            "3 attempts, each told the server died (with its log's last lines); the run "
            "was rolled back: no server process left, deployment row closed, upload released"
        ),
    )


def test_vllm_dying_during_the_stress_test_fails_it_and_rolls_the_run_back(
    prepared: tuple[str, StoredBundle], hardening: Hardening, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Enough requests that the stress test is still running when the server is killed.
    longer = {**profiles.PRESETS["smoke"], "num_requests": 400, "max_duration_s": 120}
    monkeypatch.setitem(profiles.PRESETS, "smoke", longer)
    sid = _uploaded(prepared, "dies-in-stress")

    raised, killer = _run_killed(sid, prepared[1], "stress", after=2.0)

    assert raised is not None, "the stress test passed with its server dead"
    # The platform's fault, not a missed SLO: transient, with the server's log.
    assert "died during the stress test" in str(raised), raised
    assert _attempts(sid, "warmup") == [StageStatus.succeeded]
    assert _attempts(sid, "stress") == [StageStatus.failed]
    _assert_nothing_left(sid, killer)
    hardening.record(
        category="fault",
        kind="vLLM SIGKILLed 2 s into the stress test",
        source="any",
        stage="stress",
        outcome="failed, rolled back",
        reason=(
            "the stress stage failed as the platform's fault (the server died, with its "
            "log's last lines), not as a missed SLO; the run was rolled back: no server "
            "process left, deployment row closed, upload released"
        ),
    )
