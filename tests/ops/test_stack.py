"""`paddock up` on a fresh home, then the platform used as developers and Prefect use it.

One stack for the module, started by the real command (a Prefect server on SQLite, the
`paddock` process pool and its worker, every deployment of prefect.yaml, the automations
and the paddock API) and stopped by `paddock down` at the end. The hub is a local server
whose `org/slow*` repositories answer only when a test lets them — a download stage that
takes as long as a test needs — and whose other repositories do not exist, so those runs
end at once, in download, with the developer told why (a run that ends within the SLA:
this machine cannot serve a model). The SLA is 40 s: long enough for such a run to end
in time on two busy cores, short enough to watch a slow one breach it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from paddock import accounts
from paddock.config import reset_settings
from paddock.testkit.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
SLA = 40
SETTLED = {"deployed", "failed", "inactive", "torndown", "archived"}


def paddock(
    *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paddock.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=ROOT,
    )


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# ----------------------------------------------------------------------------- the hub


@dataclass
class SlowHub:
    """A hub whose `org/slow*` model-info requests wait for `release`; all else is 404."""

    url: str
    release: threading.Event = field(default_factory=threading.Event)
    asked: dict[str, float] = field(default_factory=dict)  # repo -> when first asked


def _handler(hub: SlowHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            match = re.match(r"/api/models/([^/]+/[^/]+)", self.path)
            repo = match.group(1) if match else self.path
            hub.asked.setdefault(repo, time.time())
            if repo.startswith("org/slow"):
                hub.release.wait(timeout=180)
            body = json.dumps({"error": f"Repository {repo} not found"}).encode()
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

    return Handler


@pytest.fixture(scope="module")
def hub() -> Iterator[SlowHub]:
    port = free_port()
    hub = SlowHub(url=f"http://127.0.0.1:{port}")
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(hub))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="slow-hub", daemon=True)
    thread.start()
    yield hub
    hub.release.set()
    server.shutdown()
    server.server_close()


# ----------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    home: Path
    env: dict[str, str]
    prefect_port: int
    api_port: int
    up: subprocess.CompletedProcess[str]
    up_seconds: float
    key: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def prefect(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.key}"}
        return httpx.Client(base_url=self.api, headers=headers, timeout=30)

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.home / "stack" / "state.json").read_text())
        return data

    def flow_runs(self, submission_id: str) -> list[dict[str, Any]]:
        body = {
            "flow_runs": {"tags": {"all_": [f"submission:{submission_id}"]}},
            "sort": "EXPECTED_START_TIME_ASC",
        }
        runs: list[dict[str, Any]] = httpx.post(
            f"{self.prefect}/flow_runs/filter", json=body, timeout=10
        ).json()
        return runs

    def events(self, name: str, resource: str, timeout: float = 30) -> list[dict[str, Any]]:
        """The events of that name about that resource (the server stores them in batches)."""
        body = {"filter": {"event": {"name": [name]}, "any_resource": {"id": [resource]}}}
        deadline = time.monotonic() + timeout
        while True:
            response = httpx.post(f"{self.prefect}/events/filter", json=body, timeout=10)
            events: list[dict[str, Any]] = response.json()["events"]
            if events or time.monotonic() > deadline:
                return events
            time.sleep(1)

    def submit(self, source: str) -> str:
        with self.client() as client:
            response = client.post("/submissions", json={"source": source})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def status(self, submission_id: str) -> dict[str, Any]:
        with self.client() as client:
            report: dict[str, Any] = client.get(f"/submissions/{submission_id}").json()
        return report

    def wait(self, submission_id: str, done: Any, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            report = self.status(submission_id)
            if done(report):
                return report
            assert time.monotonic() < deadline, f"gave up waiting: {json.dumps(report)[:2000]}"
            time.sleep(0.5)


def _env(home: Path, hub: SlowHub, prefect_port: int, api_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PADDOCK_", "PREFECT_"))}
    env.update(
        PADDOCK_HOME=str(home),
        PADDOCK_PREFECT_PORT=str(prefect_port),
        PADDOCK_API_PORT=str(api_port),
        PADDOCK_SLA_SECONDS=str(SLA),
        PADDOCK_HOOK_SECRET=uuid.uuid4().hex,
        PADDOCK_ALLOWED_SOURCE_DIRS=json.dumps([str(home / "sources")]),
        PADDOCK_RETRY_BASE_SECONDS="0.05",
        HF_ENDPOINT=hub.url,
        # No model is served here: deploying fails at once, without starting vLLM.
        PADDOCK_SERVING_PYTHON=str(home / "no-serving-venv" / "bin" / "python"),
        # The feedback and maintenance deployments run on schedules; not during tests.
        PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    return env


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, hub: SlowHub) -> Iterator[Stack]:
    # Not under pytest's numbered temp dirs: a concurrent pytest session on this machine
    # prunes old ones, and this home must outlive a long module. Kept when a test failed,
    # for its logs.
    root = Path(tempfile.mkdtemp(prefix="paddock-stack-"))
    home = root / "home"
    failed_before = request.session.testsfailed
    prefect_port, api_port = free_port(), free_port()
    env = _env(home, hub, prefect_port, api_port)
    began = time.monotonic()
    up = paddock("up", env=env)
    seconds = time.monotonic() - began
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        with pytest.MonkeyPatch.context() as mp:
            for name in ("PADDOCK_API_URL", "PADDOCK_API_KEY"):
                mp.delenv(name, raising=False)
            for name, value in env.items():
                if name.startswith("PADDOCK_"):
                    mp.setenv(name, value)
            mp.setenv("PREFECT_HOME", str(home / "prefect"))
            reset_settings()
            stack = Stack(home, env, prefect_port, api_port, up, seconds)
            developer = accounts.create_developer(name=f"dev-{uuid.uuid4().hex[:8]}")
            stack.key = accounts.issue_key(developer_id=developer.id)
            yield stack
            print(f"\nstack timings: up {seconds:.1f} s, {stack.timings}")
    finally:
        paddock("down", env=env)  # whatever a test left running
        reset_settings()
        if request.session.testsfailed == failed_before:
            shutil.rmtree(root, ignore_errors=True)


# ----------------------------------------------------------------------------- tests


def test_up_starts_every_part_and_says_where(stack: Stack) -> None:
    out = stack.up.stdout
    for part in ("server", "launcher", "worker", "api", "spares"):
        assert re.search(rf"│ {part}\s", out), out
    assert out.count("started") >= 5
    assert "submission/submission" in out and "submission-missed-sla" in out
    parts = stack.state()["parts"]
    for part in parts.values():
        os.kill(part["pid"], 0)  # alive
        assert Path(part["log"]).is_file()
    assert httpx.get(f"{stack.prefect}/health", timeout=5).status_code == 200
    assert httpx.get(f"{stack.api}/openapi.json", timeout=10).status_code == 200

    automations = httpx.post(f"{stack.prefect}/automations/filter", json={}, timeout=10).json()
    alarm = next(a for a in automations if a["name"] == "submission-missed-sla")
    deployment = httpx.get(
        f"{stack.prefect}/deployments/name/submission/submission", timeout=10
    ).json()
    assert alarm["trigger"]["within"] == SLA
    assert (
        alarm["trigger"]["match_related"]["prefect.resource.id"]
        == f"prefect.deployment.{deployment['id']}"
    )
    assert alarm["actions"][0]["type"] == "call-webhook"
    # The hook's secret lives in the block (masked), never in the automation or a command line.
    secret = stack.env["PADDOCK_HOOK_SECRET"]
    assert secret not in json.dumps(automations)
    for part in parts.values():
        assert secret not in Path(f"/proc/{part['pid']}/cmdline").read_text()


def test_a_second_up_finds_every_part_running(stack: Stack) -> None:
    before = {name: p["pid"] for name, p in stack.state()["parts"].items()}
    again = paddock("up", env=stack.env, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "every part was already running" in again.stdout
    assert "older `paddock up`" not in again.stdout + again.stderr  # its worker is this one's
    assert again.stdout.count("already running") >= 5
    assert {name: p["pid"] for name, p in stack.state()["parts"].items()} == before


@pytest.mark.parametrize("taken", ["server", "api"])
def test_up_names_a_port_already_taken(tmp_path: Path, hub: SlowHub, taken: str) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        other = free_port()
        ports = (port, other) if taken == "server" else (other, port)
        env = _env(tmp_path / "home", hub, *ports)
        result = paddock("up", env=env, timeout=60)
    assert result.returncode == 2
    assert f"port {port}" in result.stderr and "already in use" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) <= 3  # one sentence, wrapped
    assert not listening(other)  # nothing was started


def test_the_hook_refuses_a_stranger(stack: Stack) -> None:
    body = {"submission_id": "nope"}
    with httpx.Client(base_url=stack.api, timeout=10) as client:
        assert client.post("/hooks/sla-breach", json=body).status_code == 401
        wrong = {"Authorization": "Bearer not-the-secret"}
        assert client.post("/hooks/sla-breach", json=body, headers=wrong).status_code == 401
        right = {"Authorization": f"Bearer {stack.env['PADDOCK_HOOK_SECRET']}"}
        assert client.post("/hooks/sla-breach", json=body, headers=right).status_code == 404


def test_a_run_is_forked_by_the_launcher_and_a_cancel_in_prefect_stops_it(
    stack: Stack, hub: SlowHub
) -> None:
    """The worker's command stands in for a fork of the launcher: cancelling the run in
    Prefect reaches the fork, and no process of it is left. (Before the slow-run test,
    which lets the hub's slow repositories answer.)"""
    sub_id = stack.submit("org/slow-cancelled")
    deadline = time.monotonic() + 60
    while "org/slow-cancelled" not in hub.asked:  # the download is under way
        assert time.monotonic() < deadline, stack.status(sub_id)
        time.sleep(0.2)
    run = stack.flow_runs(sub_id)[0]
    launcher_log = Path(stack.state()["parts"]["launcher"]["log"])
    started = re.search(rf"flow run {run['id']} started as pid (\d+)", launcher_log.read_text())
    assert started, launcher_log.read_text()
    pid = int(started[1])
    assert alive(pid)

    cancel = {"state": {"type": "CANCELLING", "name": "Cancelling"}, "force": True}
    httpx.post(f"{stack.prefect}/flow_runs/{run['id']}/set_state", json=cancel, timeout=10)
    deadline = time.monotonic() + 60
    while stack.flow_runs(sub_id)[0]["state_type"] != "CANCELLED":
        assert time.monotonic() < deadline, stack.flow_runs(sub_id)[0]["state"]
        time.sleep(0.5)
    deadline = time.monotonic() + 30
    while alive(pid):
        assert time.monotonic() < deadline, f"the cancelled run's process {pid} lives on"
        time.sleep(0.2)
    assert f"flow run {run['id']} (pid {pid}) exited" in launcher_log.read_text()


def test_a_slow_run_is_breached_while_running_and_a_fast_one_meets_its_sla(
    stack: Stack, hub: SlowHub
) -> None:
    began = time.monotonic()
    slow = stack.submit("org/slow-model")
    stack.timings["submit_to_scheduled_s"] = round(time.monotonic() - began, 2)
    fast = stack.submit("org/missing-model")
    runs = stack.flow_runs(slow)  # created before POST /submissions answered
    assert len(runs) == 1 and runs[0]["state"]["type"] in ("SCHEDULED", "PENDING", "RUNNING")

    met = stack.wait(fast, lambda r: r["status"] in SETTLED, timeout=SLA + 30)
    assert met["status"] == "failed" and met["failed_stage"] == "download"
    assert met["sla"]["state"] == "met", met["sla"]
    assert met["sla"]["seconds_left"] > 0

    late = stack.wait(slow, lambda r: r["sla"]["state"] != "on_time", timeout=SLA + 30)
    late = stack.wait(slow, lambda r: r["sla"]["state"] == "breached", timeout=30)
    stack.timings["breach_after_deadline_s"] = late["sla"]["seconds_late"]
    assert late["status"] not in SETTLED  # still running: the alarm, not its end
    assert stack.flow_runs(slow)[0]["state"]["type"] not in ("COMPLETED", "FAILED", "CRASHED")
    accepted = datetime.fromisoformat(late["sla"]["accepted_at"]).timestamp()
    if hub.asked["org/slow-model"] < accepted + SLA:  # download had begun by the deadline
        assert late["sla"]["breach_stage"] == "download"
    assert late["sla"]["slowest_stage"] in ("download", "queued")

    events = stack.events("paddock.submission.sla-breached", f"paddock.submission.{slow}")
    assert len(events) == 1
    assert events[0]["payload"]["breach_stage"] == late["sla"]["breach_stage"]

    hub.release.set()  # let the slow download end (the hub has no such model)
    ended = stack.wait(slow, lambda r: r["status"] in SETTLED, timeout=60)
    assert ended["sla"]["state"] == "breached"
    assert ended["sla"]["breached_at"] == late["sla"]["breached_at"]


def test_a_new_run_of_the_deployment_resumes_and_a_double_start_is_one_run(
    stack: Stack, tiny_model: Path
) -> None:
    """A good tiny model goes through download, sanity, serialize and upload, then fails to
    deploy (this stack has no serving interpreter): a new run must not redo the stages
    the first one finished."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from paddock import crud, dispatch

    source = stack.home / "sources" / "tiny"
    shutil.copytree(tiny_model, source)
    sub_id = stack.submit(str(source))
    first = stack.wait(sub_id, lambda r: r["status"] in SETTLED, timeout=300)
    assert first["failed_stage"] == "deploy", first["reason"]
    finished = [s["name"] for s in first["stages"] if s["status"] == "succeeded"]
    assert finished[:2] == ["download", "sanity"], first["stages"]
    # paddock records the failure a moment before Prefect records the run's end; until
    # then a start is a double click on that run, by design.
    final = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
    deadline = time.monotonic() + 60
    while stack.flow_runs(sub_id)[0]["state_type"] not in final:
        assert time.monotonic() < deadline, stack.flow_runs(sub_id)[0]["state_type"]
        time.sleep(0.5)

    with temporary_settings(updates={PREFECT_API_URL: stack.prefect}):
        one = dispatch.start_run(sub_id)
        two = dispatch.start_run(sub_id)  # a double click
    assert isinstance(one, dispatch.DeploymentRun) and isinstance(two, dispatch.DeploymentRun)
    assert one.flow_run_id == two.flow_run_id
    runs = stack.flow_runs(sub_id)
    assert len(runs) == 2 and runs[1]["id"] == str(one.flow_run_id)

    def ended_again(report: dict[str, Any]) -> bool:
        stages = {s["name"]: s for s in report["stages"]}
        return report["status"] in SETTLED and stages["deploy"]["attempts"] > stages_before

    stages_before = {s["name"]: s for s in first["stages"]}["deploy"]["attempts"]
    stack.wait(sub_id, ended_again, timeout=300)
    rows = [(r.stage, str(r.status)) for r in crud.stage_runs(submission_id=sub_id)]
    for stage in ("download", "sanity"):
        assert rows.count((stage, "succeeded")) == 1, rows  # not redone
        assert (stage, "skipped") in rows, rows
    task_runs = httpx.post(
        f"{stack.prefect}/task_runs/filter",
        json={"flow_runs": {"id": {"any_": [str(one.flow_run_id)]}}},
        timeout=10,
    ).json()
    assert {"download", "sanity", "deploy"} <= {t["name"].split("-")[0] for t in task_runs}


def test_submissions_queue_while_the_worker_is_down_and_run_when_it_returns(stack: Stack) -> None:
    worker = stack.state()["parts"]["worker"]["pid"]
    os.killpg(worker, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.2)

    sub_id = stack.submit("org/queued-model")
    time.sleep(6)
    assert stack.status(sub_id)["status"] == "submitted"
    assert [r["state"]["type"] for r in stack.flow_runs(sub_id)] == ["SCHEDULED"]

    again = paddock("up", env=stack.env, timeout=180)
    assert again.returncode == 0, again.stderr
    assert re.search(r"│ worker .*started", again.stdout), again.stdout
    assert again.stdout.count("already running") == 4  # all but the worker
    report = stack.wait(sub_id, lambda r: r["status"] in SETTLED)
    assert report["failed_stage"] == "download"  # it ran
    assert report["sla"]["queued_seconds"] >= 6


def test_the_api_wakes_the_worker_for_a_run_it_creates(stack: Stack) -> None:
    """A run is taken up the moment the API has created it, not at the worker's next
    poll: here the worker polls every 10 minutes, so only the API's nudge can bring it."""
    old = stack.state()["parts"]["worker"]["pid"]
    os.killpg(old, signal.SIGKILL)
    while alive(old):
        time.sleep(0.1)
    env = {
        **stack.env,
        "PREFECT_API_URL": stack.prefect,
        "PREFECT_HOME": str(stack.home / "prefect"),
        "PADDOCK_WORKER_SOCKET": str(stack.home / "stack" / "worker.sock"),
        "PREFECT_WORKER_QUERY_SECONDS": "600",
    }
    argv = [sys.executable, "-m", "paddock.stack.worker", "--pool", "paddock"]
    log = stack.home / "nudged-worker.log"
    with (
        log.open("w") as out,
        subprocess.Popen(
            [*argv, "--name", "paddock-worker"], env=env, stdout=out, stderr=subprocess.STDOUT
        ) as worker,
    ):
        try:
            since = datetime.now().astimezone()
            deadline = time.monotonic() + 60
            while not _beat_since(stack, since):  # synced: its queries now count
                assert worker.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            time.sleep(1)  # past the poll every worker makes as it starts

            sub_id = stack.submit("org/nudged-model")
            run_id = stack.flow_runs(sub_id)[0]["id"]
            # The worker takes the run up at once. (Whether it then starts is the
            # deployment's concurrency limit's call: the earlier tests' killed workers
            # can leave runs holding its slots.)
            deadline = time.monotonic() + 30
            while f"submitting flow run '{run_id}'" not in log.read_text():
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        finally:
            worker.terminate()
            worker.wait(30)
    assert "stopped" in log.read_text()
    assert not (stack.home / "stack" / "worker.sock").exists()


def _beat_since(stack: Stack, since: datetime) -> bool:
    workers = httpx.post(f"{stack.prefect}/work_pools/paddock/workers/filter", timeout=10).json()
    return any(
        w["name"] == "paddock-worker"
        and w["last_heartbeat_time"]
        and datetime.fromisoformat(w["last_heartbeat_time"]) >= since
        for w in workers
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_down_stops_everything_and_leaves_no_port_listening(stack: Stack) -> None:
    pids = [p["pid"] for p in stack.state()["parts"].values()]
    result = paddock("down", env=stack.env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "stopped" in result.stdout
    assert not listening(stack.prefect_port) and not listening(stack.api_port)
    assert not any(alive(pid) for pid in pids)
    assert not (stack.home / "stack" / "state.json").exists()
    assert paddock("down", env=stack.env, timeout=60).stdout.strip() == "nothing was running"
