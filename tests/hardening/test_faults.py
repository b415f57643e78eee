"""Faults: a model vLLM refuses, a stop during a run, the database going away.

The "servers" here are real process groups (`sleep`) recorded as local-backend
deployments, so stopping one is the same signal-and-wait that stops vLLM; the refusal is
read from a real vLLM log (tests/hardening/data/, from a config whose head count does not
divide its hidden size).
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prefect import flow
from sqlmodel import select

import tasks.deploy as deploy_module
from deployments import get_backend
from deployments.refusals import refusal_in
from paddock import crud, leases, lifecycle, submissions
from paddock.contracts import Endpoint, StoredBundle, WarmedUp
from paddock.db import session_scope
from paddock.errors import BackendError, IllegalTransition, ModelRefused, Rejected
from paddock.models import Conversation, Feedback, StageStatus, Status
from paddock.testkit import postgres
from tasks.deploy import deploy
from tasks.rollback import undone_on_failure
from tasks.stage import stage
from tests.hardening.conftest import Hardening
from tests.hardening.test_races import _NoRun, _race, serve_api
from tests.utils.vllm import pid_alive

DATA = Path(__file__).parent / "data"
REFUSED_LOG = (DATA / "vllm-refused-config.log").read_text()

# ------------------------------------------------------------------- refusals, classified


def test_a_config_vllm_refuses_is_named_in_vllms_own_words() -> None:
    reason = refusal_in(REFUSED_LOG)
    assert reason == (
        "ValueError: The hidden size (128) is not a multiple of the number of attention heads (3)."
    )
    # The backend hands over the last 60 lines: the reason is still in them.
    assert refusal_in("\n".join(REFUSED_LOG.splitlines()[-60:])) == reason


@pytest.mark.parametrize(
    "tail",
    [
        # It listened: a later failure is not the model's refusal.
        REFUSED_LOG + "\nINFO:     Uvicorn running on http://127.0.0.1:8000",
        # The machine's faults: memory, a taken port, a kill.
        REFUSED_LOG.replace("is not a multiple", "is not a multiple (out of memory)"),
        "(APIServer pid=1) ERROR [core.py:1] OSError: [Errno 98] Address already in use",
        "RuntimeError: CUDA error: an illegal memory access was encountered",
        "Killed",
        "",
    ],
)
def test_failures_that_may_pass_are_not_refusals(tail: str) -> None:
    assert refusal_in(tail) is None


def test_unsupported_architectures_and_invalid_values_are_refusals() -> None:
    tail = (
        "(APIServer pid=7) ERROR 11-24 05:21:49 [registry.py:9] Error in inspecting model\n"
        "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig\n"
        "  Value error, Model architectures ['FooForCausalLM'] are not supported for now."
    )
    assert refusal_in(tail) == (
        "ValidationError: 1 validation error for ModelConfig Model architectures "
        "['FooForCausalLM'] are not supported for now."
    )
    assert refusal_in("NotImplementedError: rope_scaling type 'weird'") == (
        "NotImplementedError: rope_scaling type 'weird'"
    )


# ------------------------------------------------------------- a deploy stage, with stand-ins


@dataclass
class SlowBackend:
    """A serving backend whose server (a `sleep` process group) takes as long as the test
    says to become ready, or dies with the log tail the test gives it."""

    tmp: Path
    log_tail: str = ""
    entered: threading.Event = field(default_factory=threading.Event)
    proceed: threading.Event = field(default_factory=threading.Event)
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, spec: Any) -> dict[str, Any]:
        proc = subprocess.Popen(["sleep", "120"], start_new_session=True)
        self.started.append(proc)
        log = self.tmp / f"server-{proc.pid}.log"
        log.write_text(self.log_tail)
        return {
            "backend": "local",
            "pid": proc.pid,
            "pgid": proc.pid,
            "log_path": str(log),
            "port": 9,
            "endpoint": "http://127.0.0.1:9",
        }

    def wait_ready(self, handle: dict[str, Any], *, timeout: float) -> str:
        self.entered.set()
        self.proceed.wait(timeout)
        if self.log_tail:
            raise BackendError("vLLM server exited before it was ready", log_tail=self.log_tail)
        if not pid_alive(handle["pid"]):
            raise BackendError(f"vLLM server (pid {handle['pid']}) exited before it was ready")
        return str(handle["endpoint"])

    def stop(self, handle: dict[str, Any]) -> None:
        get_backend("local").stop(handle)

    def status(self, handle: dict[str, Any]) -> str:
        return "ready" if pid_alive(handle["pid"]) else "dead"

    def reap(self) -> None:
        for proc in self.started:
            proc.kill()
            proc.wait()


@pytest.fixture
def backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_harness: None
) -> Iterator[SlowBackend]:
    fake = SlowBackend(tmp_path)
    target = SimpleNamespace(backend="local", ready_timeout_s=60.0)
    monkeypatch.setattr(deploy_module, "current_backend", lambda: fake)
    monkeypatch.setattr(deploy_module, "serving_target", lambda: target)
    monkeypatch.setattr(deploy_module, "build_spec", lambda *a: SimpleNamespace(served_name="m"))
    yield fake
    fake.reap()


@stage("warmup", retries=0)
def after_deploy(submission_id: str, endpoint: Endpoint) -> WarmedUp:
    return WarmedUp(warmup_seconds=(0.0,), parity="ok")


@flow
def deploy_and_warm(submission_id: str, stored: StoredBundle) -> WarmedUp:
    with undone_on_failure(submission_id):
        endpoint = deploy(submission_id, stored)
        return after_deploy(submission_id, endpoint)


STORED = StoredBundle(digest="d" * 64, uri="file:///nowhere", files=(), bytes=0, created=False)


def _uploaded() -> str:
    """A submission whose run has just finished uploading."""
    sid = crud.create_submission(developer="dev", source="org/slow", display_name="slow").id
    for status in lifecycle.PIPELINE[1 : lifecycle.PIPELINE.index(Status.uploading) + 1]:
        lifecycle.transition(sid, status)
    return sid


def _attempts(submission_id: str, name: str) -> list[StageStatus]:
    return [r.status for r in crud.stage_runs(submission_id=submission_id) if r.stage == name]


@pytest.mark.parametrize("stop", [submissions.teardown, submissions.deactivate])
def test_a_stop_while_the_server_starts_wins_and_leaves_nothing_serving(
    backend: SlowBackend, stop: Any, hardening: Hardening
) -> None:
    sid = _uploaded()
    outcome: list[BaseException | WarmedUp] = []

    def run() -> None:
        try:
            outcome.append(deploy_and_warm(sid, STORED))
        except BaseException as exc:
            outcome.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    assert backend.entered.wait(120), "the deploy stage never started its server"
    server = backend.started[0]

    assert stop(submission_id=sid) is True, "the recorded server is stopped by the stop"
    backend.proceed.set()
    runner.join(60)

    expected = Status.torndown if stop is submissions.teardown else Status.inactive
    assert crud.require_submission(submission_id=sid).status == expected
    assert isinstance(outcome[0], IllegalTransition), outcome
    assert f"became {expected}" in str(outcome[0])
    assert server.poll() is not None or not pid_alive(server.pid)
    assert crud.active_deployment(submission_id=sid) is None
    assert len(backend.started) == 1, "no server may start after the stop"
    assert _attempts(sid, "deploy") == [StageStatus.failed], "a stop is not retried"
    assert _attempts(sid, "warmup") == []
    hardening.record(
        category="fault",
        kind=f"{stop.__name__} while the server starts",
        source="any",
        stage="deploy",
        outcome="stopped, not retried",
        reason=(
            "the stop ends the server; the deploy fails with the new status, "
            "nothing left serving, no warm-up"
        ),
    )


def test_a_run_that_finds_its_model_stopped_starts_no_server(
    backend: SlowBackend, hardening: Hardening
) -> None:
    sid = _uploaded()
    submissions.teardown(submission_id=sid)

    with pytest.raises(Rejected, match="deploy cannot start: .* is torndown"):
        deploy_and_warm(sid, STORED)

    assert backend.started == []
    assert crud.require_submission(submission_id=sid).status == Status.torndown
    hardening.record(
        category="race",
        kind="a run resumed after its model was torn down",
        source="any",
        stage="deploy",
        outcome="refused",
        reason="deploy cannot start: the submission is torndown; no server started",
    )


def test_a_model_vllm_refuses_is_rejected_with_its_reason_and_not_retried(
    backend: SlowBackend, hardening: Hardening
) -> None:
    sid = _uploaded()
    backend.log_tail = "\n".join(REFUSED_LOG.splitlines()[-60:])
    backend.proceed.set()

    with pytest.raises(ModelRefused, match="not a multiple of the number of attention heads"):
        deploy_and_warm(sid, STORED)

    assert _attempts(sid, "deploy") == [StageStatus.rejected]  # retries=1, yet one attempt
    assert crud.active_deployment(submission_id=sid) is None
    assert all(proc.poll() is not None or not pid_alive(proc.pid) for proc in backend.started)
    hardening.record(
        category="fault",
        kind="vLLM refuses the model (heads do not divide the hidden size)",
        source="any",
        stage="deploy",
        outcome="rejected, not retried",
        reason="the developer gets vLLM's own sentence; one attempt, nothing left running",
    )


def test_a_server_that_merely_died_is_still_retried(
    backend: SlowBackend, hardening: Hardening
) -> None:
    sid = _uploaded()
    backend.log_tail = "Killed"
    backend.proceed.set()

    with pytest.raises(BackendError):
        deploy_and_warm(sid, STORED)

    assert _attempts(sid, "deploy") == [StageStatus.failed, StageStatus.failed]
    hardening.record(
        category="fault",
        kind="the model server dies while it starts (its log ends 'Killed')",
        source="any",
        stage="deploy",
        outcome="retried",
        reason="a death that is not a refusal is retried (2 attempts), then the run fails",
    )


# ------------------------------------------------------------------ the database goes away


@pytest.fixture
def pg() -> Iterator[postgres.PostgresServer]:
    if not postgres.available():
        pytest.skip("no Postgres binaries (apt-get install postgresql)")
    with postgres.PostgresServer() as server:
        yield server


def _pause(server: postgres.PostgresServer) -> None:
    server._run("pg_ctl", "-D", str(server.data_dir), "-m", "fast", "-w", "stop")


def _resume(server: postgres.PostgresServer) -> None:
    assert server.base_dir is not None
    opts = (
        f"-h 127.0.0.1 -p {server.port} -k {server.base_dir} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    log = str(server.base_dir / "postgres.log")
    server._run("pg_ctl", "-D", str(server.data_dir), "-l", log, "-o", opts, "-w", "start")


def test_the_database_briefly_down_is_a_503_and_loses_no_accepted_write(
    pg: postgres.PostgresServer, monkeypatch: pytest.MonkeyPatch, hardening: Hardening
) -> None:
    started: list[str] = []

    def start(submission_id: str) -> Any:
        started.append(submission_id)
        return _NoRun(submission_id)

    monkeypatch.setattr(submissions, "start_run", start)
    body = {"source": "org/durable", "generation_params": {}}
    with serve_api(pg.url) as api, api.client() as client:
        accepted = client.post("/submissions", json=body)
        assert accepted.status_code == 201, accepted.text

        _pause(pg)
        try:
            answers, errors = _race(4, lambda i: client.get("/submissions"))
            posted = client.post("/submissions", json={**body, "source": "org/during"})
        finally:
            _resume(pg)

        assert errors == []
        for answer in [*answers, posted]:
            assert answer.status_code == 503, answer.text
            assert "database is not answering" in answer.json()["detail"]
            assert answer.headers["Retry-After"] == "5"

        after = client.get("/submissions")
        assert after.status_code == 200
        assert [s["id"] for s in after.json()] == [accepted.json()["id"]]
        again = client.post("/submissions", json={**body, "source": "org/after"})
        assert again.status_code == 201, again.text
        assert client.get(f"/submissions/{accepted.json()['id']}").status_code == 200
    assert len(started) == 2
    hardening.record(
        category="fault",
        kind="Postgres stopped under the API",
        source="api",
        stage="submit",
        outcome="503",
        reason=(
            "requests during the outage answer 503 with Retry-After: 5; submissions "
            "accepted before it are all there after"
        ),
    )


def test_a_rating_accepted_before_the_database_went_down_is_still_there(
    pg: postgres.PostgresServer, hardening: Hardening
) -> None:
    """Ratings are group-committed: a caller is answered only once its batch committed,
    so a 201 before the outage is a stored rating, and one during it is a 503 to retry."""
    with serve_api(pg.url) as api, api.client() as client:
        sid = crud.create_submission(developer="d", source="org/rated", display_name="r").id
        with session_scope() as session:
            convs = [Conversation(user_hash=f"u{i}", submission_id=sid) for i in range(2)]
            session.add_all(convs)
        before, during = (c.id for c in convs)

        assert (
            client.post(
                f"/chat/conversations/{before}/feedback", json={"thumbs_up": True}
            ).status_code
            == 201
        )
        _pause(pg)
        try:
            down = client.post(f"/chat/conversations/{during}/feedback", json={"thumbs_up": False})
        finally:
            _resume(pg)
        assert down.status_code == 503, down.text

        again = client.post(f"/chat/conversations/{during}/feedback", json={"thumbs_up": False})
        assert again.status_code == 201, again.text
        twice = client.post(f"/chat/conversations/{before}/feedback", json={"thumbs_up": False})
        assert twice.status_code == 409, "the first rating survived the restart"
        with session_scope() as session:
            stored = session.exec(select(Feedback).where(Feedback.submission_id == sid)).all()
        assert sorted((f.conversation_id, f.thumbs_up) for f in stored) == sorted(
            [(before, True), (during, False)]
        )
    hardening.record(
        category="fault",
        kind="Postgres stopped between two ratings",
        source="api",
        stage="chat",
        outcome="503, then stored on retry",
        reason=(
            "a rating answered 201 before the outage is stored; one during it is a "
            "503, and its retry is stored once"
        ),
    )


# ------------------------------------------------------------------ the worker killed


def test_a_worker_killed_mid_flow_resumes_from_its_last_finished_stage(
    hub: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hardening: Hardening
) -> None:
    """SIGKILL the flow's process group during serialize; the next run (what `paddock run`
    starts) takes the dead worker's lease at once and skips what had finished. Its deploy
    fails fast (no serving interpreter), so no vLLM is started."""
    import os
    import signal
    import time

    from paddock import timeline
    from paddock.config import reset_settings
    from paddock.dispatch import ChildRun, start_run

    home = tmp_path / "home"
    for name, value in {
        "PADDOCK_HOME": str(home),
        "PREFECT_HOME": str(home / "prefect"),
        "HF_ENDPOINT": hub.endpoint,
        "PADDOCK_STORE_URL": str(tmp_path / "store"),
        "PADDOCK_SERVING_BACKEND": "local",
        "PADDOCK_SERVING_PYTHON": "/nonexistent/python",
        "PADDOCK_DISPATCH": "embedded",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PADDOCK_DATABASE_URL", raising=False)
    reset_settings()
    try:
        sid = crud.create_submission(
            developer="t",
            source="paddock-test/tiny",
            display_name="killed",
            requested_revision="v1",
        ).id
        first = start_run(sid)
        assert isinstance(first, ChildRun)
        deadline = time.monotonic() + 400
        while crud.require_submission(submission_id=sid).status != Status.serializing:
            assert first.alive() and time.monotonic() < deadline, timeline.build(sid).as_dict()
            time.sleep(0.2)
        os.killpg(first._proc.pid, signal.SIGKILL)
        first.wait()
        assert leases.holder_of(sid) is not None, "a killed worker leaves its lease behind"

        second = start_run(sid)
        second.wait()

        report = timeline.build(sid)
        by_name = {s.name: s.status for s in report.stages}
        assert by_name["download"] == "skipped" and by_name["sanity"] == "skipped", by_name
        assert by_name["serialize"] == "succeeded" and by_name["upload"] == "succeeded"
        assert report.status == "failed" and report.failed_stage == "deploy"
        assert leases.holder_of(sid) is None, "the resumed run released its lease"
    finally:
        monkeypatch.undo()
        reset_settings()
    hardening.record(
        category="fault",
        kind="the worker SIGKILLed during serialize",
        source="hub",
        stage="serialize",
        outcome="resumed",
        reason="the next run takes the dead worker's lease at once and skips download and sanity",
    )
