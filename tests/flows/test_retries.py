"""The one retry policy, as stages see it: Prefect retries transient faults only, and a
retried stage does not roll back what the run deployed — only a final failure does.

The "deployment" here is a real process group (a `sleep`) recorded as a local-backend
deployment, so the rollback stops a real server the way it stops vLLM.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect import flow

from paddock import crud
from paddock.contracts import WarmedUp
from paddock.errors import Rejected, TransientError
from paddock.models import StageStatus
from tasks.rollback import undone_on_failure
from tasks.stage import stage
from tests.utils.vllm import pid_alive

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A submission with a live 'server' process recorded as its active deployment."""
    sub = crud.create_submission(developer="tester", source="org/flaky", display_name="flaky")
    proc = subprocess.Popen(["sleep", "120"], start_new_session=True)
    log = tmp_path / "server.log"
    log.write_text("")
    crud.record_deployment(
        submission_id=sub.id,
        backend="local",
        endpoint="http://127.0.0.1:9",
        handle={"pid": proc.pid, "pgid": proc.pid, "log_path": str(log), "port": 9},
    )
    yield sub.id, proc.pid
    proc.kill()
    proc.wait()


def _warm_stage(failures: list[BaseException]) -> Any:
    """A warm-up stage that raises each of `failures` in turn, then succeeds."""

    @stage("warmup", retries=2)
    def flaky_warmup(submission_id: str) -> WarmedUp:
        if failures:
            raise failures.pop(0)
        return WarmedUp(warmup_seconds=(0.1,), parity="ok")

    @flow
    def pipeline(submission_id: str) -> WarmedUp:
        with undone_on_failure(submission_id):
            return flaky_warmup(submission_id)

    return pipeline


def _attempts(submission_id: str) -> list[StageStatus]:
    return [r.status for r in crud.stage_runs(submission_id=submission_id) if r.stage == "warmup"]


def test_a_retried_stage_keeps_the_deployment(server: tuple[str, int]) -> None:
    sid, pid = server
    pipeline = _warm_stage([TransientError("blip"), ConnectionError("reset")])

    assert pipeline(sid).parity == "ok"

    assert _attempts(sid) == [StageStatus.failed, StageStatus.failed, StageStatus.succeeded]
    assert pid_alive(pid), "a retried stage must not roll the deployment back"
    assert crud.active_deployment(submission_id=sid) is not None


def test_a_final_failure_rolls_the_deployment_back(server: tuple[str, int]) -> None:
    sid, pid = server
    pipeline = _warm_stage([TransientError("down")] * 3)

    with pytest.raises(TransientError, match="down"):
        pipeline(sid)

    assert _attempts(sid) == [StageStatus.failed] * 3
    assert not pid_alive(pid)
    assert crud.active_deployment(submission_id=sid) is None


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (Rejected("the model is broken"), StageStatus.rejected),
        (TypeError("a bug"), StageStatus.failed),
        (KeyError("missing"), StageStatus.failed),
    ],
)
def test_rejections_and_programming_errors_are_not_retried(
    server: tuple[str, int], error: BaseException, status: StageStatus
) -> None:
    sid, pid = server
    pipeline = _warm_stage([error])

    with pytest.raises(type(error)):
        pipeline(sid)

    assert _attempts(sid) == [status]
    assert not pid_alive(pid)
