"""The runtime checks run beside serialize → upload → deploy, and the upload beside deploy
when the server maps the run's own bundle; either side's failure is handled as if they
had run in turn: a side stage that fails stops the deploy and rolls the run back; a
deploy that fails first is the reason, and what runs beside it is waited for (an upload
still writing is taken back once it ends).

The real flow on real parts (olah is not needed: the sources are local directories under
the allowed root; moto S3 is the store; the checks load the model with transformers). The
deploy's server is a stand-in, as in tests/hardening/test_faults.py: a `sleep` process
group recorded as a local-backend deployment, so stopping it is the same signal that
stops vLLM — and, like the local backend, it notices when its server dies. The runtime
checks are the real ones, held back only until the moment each test needs.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from safetensors.torch import load_file, save_file

import flows.submission as flow_module
import tasks.deploy as deploy_module
import tasks.runtime as runtime_module
import tasks.upload as upload_module
from flows.submission import submission
from paddock import crud, lifecycle, timeline
from paddock.config import get_settings
from paddock.contracts import Bundle, Endpoint, Snapshot, StressSummary, WarmedUp
from paddock.errors import BackendError, ConfigurationError, Rejected
from paddock.models import StageRun, StageStatus, Status, Submission
from paddock.serving import stop_serving
from tasks.stage import stage
from tests.utils.blocks import use_s3_store, use_serving
from tests.utils.vllm import pid_alive

pytestmark = pytest.mark.usefixtures("prefect_harness")


# ------------------------------------------------------------------------ the lifecycle


def test_the_overlapped_stage_is_in_the_order_but_never_moves_the_status() -> None:
    names = [s.name for s in lifecycle.STAGES]
    assert names.index("sanity") < names.index("runtime") < names.index("serialize")
    assert lifecycle.stage_status("runtime") is None
    assert len(set(lifecycle.PIPELINE)) == len(lifecycle.PIPELINE), "one status, one place"
    assert Status.checking in lifecycle.PIPELINE
    with pytest.raises(ValueError, match="alongside"):
        lifecycle.Stage("x", Status.checking, alongside=("serialize",))


# ------------------------------------------------------------------------- stand-ins


@dataclass
class StandInBackend:
    """A server (a `sleep` process group) that is ready when the test says so, and that
    fails its start-up wait as soon as it dies, as the local backend's wait does."""

    tmp: Path
    target: SimpleNamespace  # the serving target deploy reads (local_copy: upload beside)
    refuse: BaseException | None = None  # raised by start(): no server at all
    entered: threading.Event = field(default_factory=threading.Event)
    proceed: threading.Event = field(default_factory=threading.Event)
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, spec: Any) -> dict[str, Any]:
        if self.refuse is not None:
            raise self.refuse
        proc = subprocess.Popen(["sleep", "120"], start_new_session=True)
        self.started.append(proc)
        log = self.tmp / f"server-{proc.pid}.log"
        log.write_text("")
        return {"backend": "local", "pid": proc.pid, "pgid": proc.pid, "log_path": str(log)}

    def wait_ready(self, handle: dict[str, Any], *, timeout: float) -> str:
        self.entered.set()
        deadline = time.monotonic() + timeout
        while not self.proceed.wait(0.05):
            if not pid_alive(handle["pid"]):
                raise BackendError(f"vLLM server (pid {handle['pid']}) exited before it was ready")
            if time.monotonic() > deadline:
                raise BackendError("not ready in time")
        return "http://127.0.0.1:9"

    def stop(self, handle: dict[str, Any]) -> None:
        from deployments import get_backend

        get_backend("local").stop(handle)

    def status(self, handle: dict[str, Any]) -> str:
        return "ready" if pid_alive(handle["pid"]) else "dead"

    def reap(self) -> None:
        for proc in self.started:
            proc.kill()
            proc.wait()


@dataclass
class HeldChecks:
    """The real runtime checks, started only once ``until()`` holds."""

    until: Callable[[], bool] = lambda: True
    thread: threading.Thread | None = None
    ended_at: float | None = None

    def __call__(self, model_dir: Path, **kwargs: Any) -> dict[str, Any]:
        self.thread = threading.current_thread()
        deadline = time.monotonic() + 120
        while not self.until():
            assert time.monotonic() < deadline, "the moment the test waits for never came"
            time.sleep(0.02)
        try:
            return REAL_CHECKS(model_dir, **kwargs)
        finally:
            self.ended_at = time.monotonic()


REAL_CHECKS = runtime_module.runtime_checks


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandInBackend]:
    target = SimpleNamespace(backend="local", ready_timeout_s=60.0, local_copy=True)
    fake = StandInBackend(tmp_path, target)
    monkeypatch.setattr(deploy_module, "current_backend", lambda: fake)
    monkeypatch.setattr(deploy_module, "serving_target", lambda: target)
    monkeypatch.setattr(deploy_module, "build_spec", lambda *a: SimpleNamespace(served_name="m"))
    yield fake
    fake.reap()


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> HeldChecks:
    held = HeldChecks()
    monkeypatch.setattr(runtime_module, "runtime_checks", held)
    return held


@pytest.fixture
def store(s3: Any, request: pytest.FixtureRequest) -> Callable[[], list[str]]:
    """A store prefix of the test's own; what is in it."""
    prefix = f"overlap-{request.node.name}".replace("[", "-").replace("]", "")
    use_s3_store(s3, prefix)
    use_serving()

    def objects() -> list[str]:
        listing = s3.client().list_objects_v2(Bucket="models", Prefix=prefix)
        return [o["Key"] for o in listing.get("Contents", [])]

    return objects


def _submitted(
    paddock_home: Path, tiny_model: Path, name: str, *, overflow: bool = False
) -> Submission:
    """A submission of a copy of the tiny model under the allowed root. ``overflow``: its
    output weights are finite but so large that a forward pass overflows — every static
    check and the value scan pass, and only the runtime checks can tell."""
    src = paddock_home / "sources" / "overlap" / name
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(tiny_model, src)
    if overflow:
        tensors = load_file(src / "model.safetensors")
        head = tensors["lm_head.weight"]
        tensors["lm_head.weight"] = head / head.abs().max() * 3e38
        save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    return crud.create_submission(developer="t", source=str(src), display_name=f"overlap-{name}")


def _rows(submission_id: str, name: str) -> list[StageRun]:
    return [r for r in crud.stage_runs(submission_id=submission_id) if r.stage == name]


def _started(submission_id: str, name: str) -> Callable[[], bool]:
    return lambda: bool(_rows(submission_id, name))


def _children() -> set[str]:
    """This process's live children (a stopped server not yet reaped by its Popen is a
    zombie, not a process left running)."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                found.add(f"{child.pid} {' '.join(child.cmdline())}")
        except psutil.NoSuchProcess:
            pass
    return found


def _stopped_mid_deploy(
    backend: StandInBackend, submission_id: str, error: type[BaseException], match: str, side: str
) -> timeline.StatusReport:
    """Run the flow while the ``side`` stage fails under a starting server: the side's
    failure is the run's, and the deploy was stopped by it — not left to finish or to
    time out (60 s), and a stop is not retried — with nothing left running."""
    before = _children()
    began = time.monotonic()
    with pytest.raises(error, match=match):
        submission(submission_id)
    seconds = time.monotonic() - began

    report = timeline.build(submission_id)
    assert report.status == "failed" and report.failed_stage == side, report.reason
    assert match in (report.reason or "")
    assert not backend.proceed.is_set() and seconds < 45
    assert [r.status for r in _rows(submission_id, "deploy")] == [StageStatus.failed]
    assert _rows(submission_id, "warmup") == []
    assert len(backend.started) == 1
    assert not pid_alive(backend.started[0].pid), "the server was left running"
    assert crud.active_deployment(submission_id=submission_id) is None
    assert _children() <= before
    return report


# ---------------------------------------------------------------------------- the tests


@pytest.mark.parametrize(
    "local_copy", [True, False], ids=["upload-beside-deploy", "upload-before-deploy"]
)
def test_the_checks_run_beside_the_main_line_and_are_joined_before_warmup(
    backend: StandInBackend,
    checks: HeldChecks,
    store: Callable[[], list[str]],
    monkeypatch: pytest.MonkeyPatch,
    paddock_home: Path,
    tiny_model: Path,
    local_copy: bool,
) -> None:
    backend.target.local_copy = local_copy
    sub = _submitted(paddock_home, tiny_model, f"good-{local_copy}")
    # The checks start once serialize has, and the server is ready once their stage is
    # recorded as done (not merely once the check function returned: the stage still
    # writes the reference after that): their span lies inside the main line's by
    # construction, not by luck.
    checks.until = _started(sub.id, "serialize")

    def ready_when_checked() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(
            r.status is StageStatus.succeeded for r in _rows(sub.id, "runtime")
        ):
            time.sleep(0.02)
        backend.proceed.set()

    threading.Thread(target=ready_when_checked, daemon=True).start()
    seen_reference: list[bool] = []

    @stage("warmup", retries=0)
    def warmup(submission_id: str, endpoint: Endpoint) -> WarmedUp:
        seen_reference.append(bool(crud.require_submission(submission_id=submission_id).reference))
        return WarmedUp(warmup_seconds=(0.0,), parity="stand-in")

    @stage("stress", retries=0)
    def stress_test(submission_id: str, endpoint: Endpoint) -> StressSummary:
        return StressSummary(
            passed=True,
            stress_run_id=None,
            completed=0,
            median_ttft_ms=0.0,
            median_tpot_ms=0.0,
            request_throughput=0.0,
        )

    monkeypatch.setattr(flow_module, "warmup", warmup)
    monkeypatch.setattr(flow_module, "stress_test", stress_test)
    try:
        state = submission(sub.id, return_state=True)
        assert state.is_completed(), state

        report = timeline.build(sub.id)
        assert report.status == "deployed", report.reason
        assert seen_reference == [True], "warm-up ran before the reference was recorded"
        assert [s.name for s in report.stages][:3] == ["download", "sanity", "runtime"]
        spans = {name: _rows(sub.id, name)[-1] for name in ("runtime", "serialize", "deploy")}
        assert all(r.status is StageStatus.succeeded for r in spans.values())
        runtime, serialize, deploy = spans["runtime"], spans["serialize"], spans["deploy"]
        assert runtime.ended_at and serialize.ended_at and deploy.ended_at
        assert runtime.started_at < serialize.ended_at, "the checks waited for serialize"
        assert runtime.ended_at > serialize.started_at and runtime.ended_at < deploy.ended_at
        warm = _rows(sub.id, "warmup")[-1]
        assert warm.started_at >= runtime.ended_at, "warm-up did not wait for the checks"
        assert any(k.endswith("model.tensors") for k in store())
        [up] = _rows(sub.id, "upload")
        assert up.status is StageStatus.succeeded and up.ended_at
        stressed = _rows(sub.id, "stress")[-1]
        assert stressed.started_at >= up.ended_at, "the stress gate did not wait for the upload"
        assert report.artifacts, "the upload's reference to the bundle was not recorded"
        if local_copy:  # the server maps the run's own bundle: the upload runs beside it
            assert up.started_at >= serialize.ended_at and up.started_at < deploy.ended_at
        else:  # the server reads the store: deploy waits for the upload
            assert up.ended_at <= deploy.started_at

        # Prefect shows the checks as their own task run, under way beside deploy.
        flow_run_id = state.state_details.flow_run_id
        with get_client(sync_client=True) as client:
            task_runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
        by_name = {t.name.split("-")[0]: t for t in task_runs}
        assert {"sanity", "runtime", "serialize", "upload", "deploy"} <= set(by_name)
        ran, dep = by_name["runtime"], by_name["deploy"]
        assert ran.state is not None and ran.state.is_completed()
        assert ran.start_time and ran.end_time and dep.start_time and dep.end_time
        assert ran.start_time < dep.end_time and ran.end_time > by_name["serialize"].start_time
    finally:
        stop_serving(sub.id)


def test_checks_that_fail_while_deploy_is_under_way_stop_it_and_roll_back(
    backend: StandInBackend,
    checks: HeldChecks,
    store: Callable[[], list[str]],
    paddock_home: Path,
    tiny_model: Path,
) -> None:
    sub = _submitted(paddock_home, tiny_model, "overflow", overflow=True)
    checks.until = backend.entered.is_set  # the server is starting when they fail

    report = _stopped_mid_deploy(
        backend, sub.id, Rejected, "forward pass produced NaN or infinite logits", "runtime"
    )

    # Nothing stored, nothing on disk, nothing running.
    assert store() == []
    assert report.artifacts == []
    assert not (get_settings().work_dir / sub.id).exists()
    assert checks.thread is not None and not checks.thread.is_alive()


@pytest.mark.parametrize("overflow", [False, True], ids=["checks-pass", "checks-refuse"])
def test_a_deploy_that_fails_first_is_the_reason_and_the_checks_are_waited_for(
    backend: StandInBackend,
    checks: HeldChecks,
    store: Callable[[], list[str]],
    paddock_home: Path,
    tiny_model: Path,
    overflow: bool,
) -> None:
    sub = _submitted(paddock_home, tiny_model, f"late-{overflow}", overflow=overflow)
    backend.refuse = ConfigurationError("the serving target names no Python to run vLLM")

    def deploy_failed() -> bool:
        return any(r.status is StageStatus.failed for r in _rows(sub.id, "deploy"))

    checks.until = deploy_failed  # still running when deploy fails
    before = _children()

    with pytest.raises(ConfigurationError, match="no Python"):
        submission(sub.id)
    returned = time.monotonic()

    report = timeline.build(sub.id)
    assert report.status == "failed" and report.failed_stage == "deploy", report.reason
    assert "no Python" in (report.reason or "")
    assert checks.ended_at is not None and checks.ended_at <= returned, "checks outlived the flow"
    assert checks.thread is not None and not checks.thread.is_alive()
    [ran] = _rows(sub.id, "runtime")
    assert ran.status is (StageStatus.rejected if overflow else StageStatus.succeeded)
    assert ran.ended_at is not None
    assert _children() <= before
    assert store() == [] and report.artifacts == []
    assert crud.active_deployment(submission_id=sub.id) is None
    # A refused model leaves nothing on disk; a good one keeps its files for a re-run.
    assert (get_settings().work_dir / sub.id).exists() is not overflow


def test_checks_that_fail_before_deploy_starts_keep_it_from_starting(
    backend: StandInBackend,
    store: Callable[[], list[str]],
    monkeypatch: pytest.MonkeyPatch,
    paddock_home: Path,
    tiny_model: Path,
) -> None:
    sub = _submitted(paddock_home, tiny_model, "overflow-early", overflow=True)
    real_serialize = flow_module.serialize

    def serialize_once_checked(submission_id: str, snapshot: Snapshot) -> Bundle:
        """The real serialize, once the failed checks have failed the submission: the
        narrowest race there is — the stage starts after the failure, from `failed` (as a
        resumed run's stage would), and the flow must still stop before the next one."""
        deadline = time.monotonic() + 120
        while crud.require_submission(submission_id=submission_id).status != Status.failed:
            assert time.monotonic() < deadline, "the checks never failed the submission"
            time.sleep(0.02)
        return real_serialize(submission_id, snapshot)

    monkeypatch.setattr(flow_module, "serialize", serialize_once_checked)

    with pytest.raises(Rejected, match="forward pass"):
        submission(sub.id)

    report = timeline.build(sub.id)
    assert report.status == "failed" and report.failed_stage == "runtime", report.reason
    assert [s.name for s in report.stages] == ["download", "sanity", "runtime", "serialize"]
    assert backend.started == [] and not backend.entered.is_set()
    assert store() == [] and report.artifacts == []
    assert not (get_settings().work_dir / sub.id).exists()


# ------------------------------------------------------------- the upload beside deploy


def _upload_store_once(
    monkeypatch: pytest.MonkeyPatch, until: Callable[[], bool], *, bucket: str | None = None
) -> None:
    """The upload stage opens its store only once ``until()`` holds (and, with ``bucket``,
    a bucket S3 does not have: the real server refuses the upload)."""
    real = upload_module.model_store

    def held() -> Any:
        deadline = time.monotonic() + 120
        while not until():
            assert time.monotonic() < deadline, "the moment the test waits for never came"
            time.sleep(0.02)
        block = real()
        if bucket is not None:
            block = block.model_copy(update={"url": f"s3://{bucket}/nowhere"})
        return block

    monkeypatch.setattr(upload_module, "model_store", held)


def test_an_upload_that_fails_beside_deploy_stops_it_and_is_the_reason(
    backend: StandInBackend,
    store: Callable[[], list[str]],
    monkeypatch: pytest.MonkeyPatch,
    paddock_home: Path,
    tiny_model: Path,
) -> None:
    sub = _submitted(paddock_home, tiny_model, "lost-upload")
    # The server is starting when S3 refuses the upload (no such bucket: not transient).
    _upload_store_once(monkeypatch, backend.entered.is_set, bucket="no-such-bucket")

    report = _stopped_mid_deploy(backend, sub.id, Exception, "NoSuchBucket", "upload")

    assert report.artifacts == [] and store() == []


def test_an_upload_that_fails_during_warmup_stops_the_run_before_the_stress_gate(
    backend: StandInBackend,
    store: Callable[[], list[str]],
    monkeypatch: pytest.MonkeyPatch,
    paddock_home: Path,
    tiny_model: Path,
) -> None:
    sub = _submitted(paddock_home, tiny_model, "upload-lost-in-warmup")
    backend.proceed.set()  # the server is ready at once: warm-up begins beside the upload
    _upload_store_once(monkeypatch, _started(sub.id, "warmup"), bucket="no-such-bucket")
    stressed: list[str] = []

    @stage("warmup", retries=0)
    def warmup(submission_id: str, endpoint: Endpoint) -> WarmedUp:
        # Warm-up is talking to the server when the upload fails: the upload's watcher
        # stops the server under it, as a real warm-up would find.
        server = backend.started[0].pid
        deadline = time.monotonic() + 60
        while pid_alive(server):
            assert time.monotonic() < deadline, "the failed upload left the server running"
            time.sleep(0.02)
        raise BackendError(f"the server at {endpoint.url} went away during warm-up")

    @stage("stress", retries=0)
    def stress_test(submission_id: str, endpoint: Endpoint) -> StressSummary:
        stressed.append(submission_id)
        raise AssertionError("the stress gate ran without a stored bundle")

    monkeypatch.setattr(flow_module, "warmup", warmup)
    monkeypatch.setattr(flow_module, "stress_test", stress_test)
    with pytest.raises(Exception, match="NoSuchBucket"):
        submission(sub.id)

    report = timeline.build(sub.id)
    assert report.status == "failed" and report.failed_stage == "upload", report.reason
    assert "NoSuchBucket" in (report.reason or "")
    assert [r.status for r in _rows(sub.id, "warmup")] == [StageStatus.failed]
    assert stressed == [] and report.artifacts == [] and store() == []
    assert crud.active_deployment(submission_id=sub.id) is None


def test_a_deploy_that_fails_first_waits_for_the_upload_beside_it_then_takes_it_back(
    backend: StandInBackend,
    store: Callable[[], list[str]],
    monkeypatch: pytest.MonkeyPatch,
    paddock_home: Path,
    tiny_model: Path,
) -> None:
    sub = _submitted(paddock_home, tiny_model, "late-upload")
    backend.refuse = ConfigurationError("the serving target names no Python to run vLLM")

    def deploy_failed() -> bool:
        return any(r.status is StageStatus.failed for r in _rows(sub.id, "deploy"))

    # The upload stores the bundle only after the deploy has failed: the rollback must
    # wait for it, or it would take back nothing and leave the bundle in the store.
    _upload_store_once(monkeypatch, deploy_failed)

    with pytest.raises(ConfigurationError, match="no Python"):
        submission(sub.id)

    report = timeline.build(sub.id)
    assert report.status == "failed" and report.failed_stage == "deploy", report.reason
    [up] = _rows(sub.id, "upload")
    assert up.status is StageStatus.succeeded, "the upload was meant to finish"
    assert store() == [] and report.artifacts == [], "the upload outlived its rollback"
    assert crud.active_deployment(submission_id=sub.id) is None
