"""Secrets never leak: the hub token, the store's keys, a developer's API key and the
user-hash secret stay where they were put.

The founding path runs on real parts — `paddock serve`, the tiny model on the hub mirror
(fetched with an `HF_TOKEN`), an S3 store on moto with keys, a vLLM server streaming its
tensors from that store, a user's chat and rating, the feedback flow — and then every
place a secret could surface is read: every log under PADDOCK_HOME (the API's, the flow's,
the vLLM server's), the vLLM processes' argv (`ps`) and `/proc/<pid>/environ`, the Prefect
flow runs' parameters, task runs, artifacts and logs (through Prefect's API), `paddock
status --json` and the API's status, and every row of the database (stage_runs' details
among them). The one place the store's keys may be is the server's private `~/.s3cfg`,
and that is removed with the server — also when the flow that started it was killed
mid-deploy: the hourly cleanup (`flows.maintenance.cleanup`) expires the stuck
submission and stops its server, and the stale home goes with it (`paddock run ID`, a
resume, does the same from its deploy stage, which stops a previous attempt's server
first).

A test compares and never prints: a failure names the secret and the place, never the
text it was found in.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployments.base import ServeSpec
from deployments.child_env import child_env, private_home
from deployments.processes import group_members
from paddock.testkit.ports import free_port
from tests.utils.vllm import needs_vllm

ROOT = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- the allowlist


def test_the_server_environment_is_an_allowlist(monkeypatch: pytest.MonkeyPatch) -> None:
    planted = {
        "HF_TOKEN": "hf_planted",
        "PADDOCK_S3_SECRET_ACCESS_KEY": "planted-store-secret",
        "PADDOCK_USER_HASH_SECRET": "planted-hash-secret",
        "PADDOCK_API_KEY": "pdk_planted",
        "PREFECT_API_KEY": "pnu_planted",
        "AWS_ACCESS_KEY_ID": "AKIAPLANTED",
        "AWS_SECRET_ACCESS_KEY": "planted-aws-secret",
        "AWS_SESSION_TOKEN": "planted-session",
    }
    kept = {"VLLM_CPU_OMP_THREADS_BIND": "auto", "OMP_NUM_THREADS": "2", "LANG": "C.UTF-8"}
    for key, value in {**planted, **kept}.items():
        monkeypatch.setenv(key, value)

    local = child_env(ServeSpec("sub", "m", "/srv/bundle"))
    assert not set(planted) & set(local)
    assert {k: local[k] for k in kept} == kept and local["PATH"] == os.environ["PATH"]

    spec = ServeSpec("sub", "m", "s3://models/b/", env={"S3_SECRET_ACCESS_KEY": "from-block"})
    env = child_env(spec)
    home = private_home(env, None, None)
    try:
        assert not {k for k in env if "SECRET" in k or "ACCESS_KEY" in k or "TOKEN" in k}
        cfg = home / ".s3cfg"
        assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        text = cfg.read_text()
        assert "from-block" in text and "AKIAPLANTED" in text  # the block's secret wins
        assert env["HOME"] == str(home)
    finally:
        cfg.unlink()
        home.rmdir()


# --------------------------------------------------------------------------- end to end


@dataclass(frozen=True)
class Platform:
    url: str
    home: Path
    env: dict[str, str]
    secrets: dict[str, str]  # what it is → its value (compared, never printed)

    def key_env(self) -> dict[str, str]:
        return {
            **self.env,
            "PADDOCK_API_URL": self.url,
            "PADDOCK_API_KEY": self.secrets["developer API key"],
        }

    def dev(self) -> httpx.Client:
        key = self.secrets["developer API key"]
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        )


def assert_absent(found_in: str, text: str, platform: Platform) -> None:
    """No secret in ``text``; the failure names the secret, never the text."""
    leaked = [name for name, value in platform.secrets.items() if value in text]
    assert not leaked, f"{', '.join(leaked)} found in {found_in}"


def said(done: subprocess.CompletedProcess[str], platform: Platform) -> str:
    """A child's output for a failure message, unless it holds a secret."""
    text = (done.stdout + done.stderr)[-3000:]
    if any(value in text for value in platform.secrets.values()):
        return "(output withheld: it holds a secret)"
    return text


def _run(
    args: list[str], env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout
    )


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, hub: Any, s3: Any) -> Iterator[Platform]:
    """`paddock serve` on a fresh machine whose seeds carry real-looking secrets."""
    home = tmp_path_factory.mktemp("secrets") / "home"
    values = {
        "hub token": "hf_" + secrets.token_urlsafe(24),
        "S3 access key id": "AKIA" + secrets.token_hex(8).upper(),
        "S3 secret access key": secrets.token_urlsafe(30),
        "user-hash secret": secrets.token_urlsafe(32),
    }
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PADDOCK_", "PREFECT_", "AWS_", "HF_"))
    }
    env.update(
        PADDOCK_HOME=str(home),
        HF_ENDPOINT=hub.endpoint,
        HF_TOKEN=values["hub token"],
        PADDOCK_STORE_URL=f"s3://models/secrets-{secrets.token_hex(4)}",
        PADDOCK_S3_ENDPOINT_URL=s3.endpoint,
        PADDOCK_S3_ACCESS_KEY_ID=values["S3 access key id"],
        PADDOCK_S3_SECRET_ACCESS_KEY=values["S3 secret access key"],
        # The server streams its tensors from the store with the keys (the case to
        # check), rather than mapping the copy its run serialized on this machine.
        PADDOCK_SERVE_LOCAL_COPY="false",
        PADDOCK_USER_HASH_SECRET=values["user-hash secret"],
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        # As paddock's own flow children get: a busy machine starts an ephemeral Prefect
        # (the feedback and cleanup flows run on one) slower than Prefect's 20 s default.
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
    )
    (home / "logs").mkdir(parents=True)
    created = _run(["-m", "paddock.cli", "developer", "create", "jane"], env)
    assert created.returncode == 0, "paddock developer create failed"
    key = re.search(r"pdk_[A-Za-z0-9_\-]+", created.stdout + created.stderr)
    assert key is not None, "no key in paddock developer create's output"
    values["developer API key"] = key.group()

    port = free_port()
    log = (home / "logs" / "api.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "paddock.cli", "serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert server.poll() is None, "paddock serve exited"
        assert time.monotonic() < deadline, "paddock serve did not come up"
        time.sleep(0.2)
    try:
        yield Platform(url, home, env, values)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
        _run(["-c", _STOP_ALL], env, timeout=120)  # no model server outlives the module


_STOP_ALL = (
    "from paddock import crud\n"
    "from paddock.serving import stop_serving\n"
    "for sub in crud.list_submissions():\n"
    "    while stop_serving(sub.id):\n"
    "        pass\n"
)


def _submit(platform: Platform, name: str) -> str:
    with platform.dev() as dev:
        created = dev.post("/submissions", json={"source": "paddock-test/tiny", "name": name})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _status(platform: Platform, sid: str) -> dict[str, Any]:
    with platform.dev() as dev:
        report: dict[str, Any] = dev.get(f"/submissions/{sid}").json()
    return report


def _deployment_handle(platform: Platform, sid: str) -> dict[str, Any] | None:
    with sqlite3.connect(platform.home / "paddock.db") as db:
        row = db.execute(
            "SELECT handle FROM deployments WHERE submission_id = ? ORDER BY id DESC LIMIT 1",
            (sid,),
        ).fetchone()
    if row is None:
        return None
    handle: dict[str, Any] = json.loads(row[0])
    return handle


def _chat(platform: Platform) -> None:
    with httpx.Client(base_url=platform.url, timeout=120) as user:
        started = user.post("/chat/conversations", json={"user_id": "app-user-1", "consent": True})
        assert started.status_code == 201, started.text
        cid = started.json()["conversation_id"]
        with user.stream(
            "POST", f"/chat/conversations/{cid}/messages", json={"content": "Hello there!"}
        ) as reply:
            assert reply.status_code == 200
            body = reply.read().decode()
        assert '"done":true' in body
        rated = user.post(f"/chat/conversations/{cid}/feedback", json={"thumbs_up": True})
        assert rated.status_code == 201, rated.text


_PREFECT_DUMP = """
import asyncio, json, sys
from prefect.client.orchestration import get_client

async def every(read):
    out, offset = [], 0
    while True:
        page = await read(limit=200, offset=offset)
        out += [item.model_dump(mode="json") for item in page]
        if len(page) < 200:
            return out
        offset += 200

async def main():
    async with get_client() as client:
        dump = {
            "flow_runs": await every(client.read_flow_runs),
            "task_runs": await every(client.read_task_runs),
            "artifacts": await every(client.read_artifacts),
            "logs": await every(client.read_logs),
        }
    with open(sys.argv[1], "w") as fh:
        json.dump(dump, fh)

asyncio.run(main())
"""


def _prefect_records(platform: Platform, into: Path) -> dict[str, list[dict[str, Any]]]:
    """Everything Prefect's API holds about the runs: read by a child on the platform's
    Prefect home, written to a file (never to a pipe a failure could print)."""
    env = {**platform.env, "PREFECT_HOME": str(platform.home / "prefect")}  # as paddock sets
    done = _run(["-c", _PREFECT_DUMP, str(into)], env, timeout=300)
    assert done.returncode == 0, said(done, platform)
    records: dict[str, list[dict[str, Any]]] = json.loads(into.read_text())
    return records


def _database_rows(path: Path) -> dict[str, str]:
    """Every row of every table, as text, by table."""
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: repr(db.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables}


def _logs(home: Path) -> dict[str, str]:
    found = {p for p in (home / "logs").rglob("*") if p.is_file()}
    found |= set(home.rglob("*.log"))
    return {str(p.relative_to(home)): p.read_text(errors="replace") for p in sorted(found)}


@pytest.mark.vllm
@needs_vllm
def test_a_founding_run_leaks_no_secret(platform: Platform, tmp_path: Path) -> None:
    sid = _submit(platform, "tiny-secrets")
    deadline = time.monotonic() + 420
    while (report := _status(platform, sid))["status"] != "deployed":
        assert report["status"] != "failed", report["reason"]
        assert time.monotonic() < deadline, report["status"]
        time.sleep(1)
    _chat(platform)
    flow = _run(["-m", "flows.feedback"], platform.env)
    assert flow.returncode == 0, said(flow, platform)
    assert_absent("the feedback flow's output", flow.stdout + flow.stderr, platform)

    # The vLLM server, while it serves: argv (as ps shows it) and environment, every process
    # of its group (the API server and the engine core it forks).
    handle = _deployment_handle(platform, sid)
    assert handle is not None and handle.get("home"), "no private home for an S3 bundle"
    members = group_members(int(handle["pgid"]))
    assert members, "the vLLM server is not running"
    for pid in members:
        ps = subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(pid)], capture_output=True)
        assert_absent(f"ps of vLLM pid {pid}", ps.stdout.decode(errors="replace"), platform)
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        assert_absent(f"/proc/{pid}/cmdline", argv, platform)
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        assert_absent(f"/proc/{pid}/environ", environ, platform)
        names = {v.split("=", 1)[0] for v in environ.split("\0") if v}
        # paddock's settings stay behind; the PADDOCK_ names left are the serving plugin's switches
        assert "HF_TOKEN" not in environ
        assert {n for n in names if n.startswith("PADDOCK_")} <= {
            "PADDOCK_VLLM_ENGINE_FORK",
            "PADDOCK_VLLM_EAGER_RANKS",
        }
    # The one place the store's keys are: the server's private ~/.s3cfg.
    home = Path(handle["home"])
    cfg = home / ".s3cfg"
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    assert platform.secrets["S3 secret access key"] in cfg.read_text()

    # What developers and operators read.
    cli = _run(["-m", "paddock.cli", "status", sid, "--json"], platform.env)
    assert cli.returncode == 0, said(cli, platform)
    assert json.loads(cli.stdout)["status"] == "deployed"
    assert_absent("paddock status --json", cli.stdout + cli.stderr, platform)
    via_api = _run(["-m", "paddock.cli", "status", sid, "--json"], platform.key_env())
    assert via_api.returncode == 0, said(via_api, platform)
    assert_absent("paddock status --json (API)", via_api.stdout + via_api.stderr, platform)
    assert_absent("GET /submissions/{id}", json.dumps(_status(platform, sid)), platform)

    # Prefect's records of the runs: parameters, task runs, artifacts, logs.
    prefect = _prefect_records(platform, tmp_path / "prefect.json")
    runs = {r["name"]: r for r in prefect["flow_runs"]}
    assert f"submission-{sid}" in runs, sorted(runs)  # names only: never a secret
    assert runs[f"submission-{sid}"]["parameters"] == {"submission_id": sid}
    assert prefect["artifacts"], "the run published no artifacts"
    for kind, items in prefect.items():
        assert_absent(f"Prefect's {kind}", json.dumps(items), platform)

    # The database: stage_runs' details and every other row.
    rows = _database_rows(platform.home / "paddock.db")
    assert "stage_runs" in rows
    for table, text in rows.items():
        assert_absent(f"the database's {table}", text, platform)

    # Every log under PADDOCK_HOME: the API's, the flow's, the vLLM server's.
    logs = _logs(platform.home)
    assert any(name.endswith(".flow.log") for name in logs), sorted(logs)
    assert Path(handle["log_path"]).is_relative_to(platform.home)
    for name, text in logs.items():
        assert_absent(name, text, platform)

    with platform.dev() as dev:
        assert dev.post(f"/submissions/{sid}/teardown").status_code == 200
    assert not home.exists(), "the private home outlived its server"
    assert group_members(int(handle["pgid"])) == []


def _flow_process(sid: str) -> int | None:
    """The pid of `python -m flows.submission <sid>`, if it runs."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"flows.submission" in argv and sid.encode() in argv:
            return int(entry.name)
    return None


@pytest.mark.vllm
@needs_vllm
def test_a_flow_killed_mid_deploy_leaves_no_credentials_behind(platform: Platform) -> None:
    """SIGKILL the flow (its whole process group: a crash, nothing runs a finally) once
    the server has started; the private home with ~/.s3cfg is left behind, and the next
    cleanup run removes it with the server."""
    sid = _submit(platform, "tiny-crash")
    deadline = time.monotonic() + 420
    while (handle := _deployment_handle(platform, sid)) is None or not handle.get("home"):
        assert _status(platform, sid)["status"] != "failed", "the run failed before deploying"
        assert time.monotonic() < deadline, "the run never reached its deploy stage"
        time.sleep(0.1)
    pid = _flow_process(sid)
    assert pid is not None, "the flow process is not running"
    flow_group = os.getpgid(pid)
    assert flow_group != int(handle["pgid"])
    if flow_group == pid:  # a detached run leads its own group (with its Prefect server)
        os.killpg(flow_group, signal.SIGKILL)
    else:
        os.kill(pid, signal.SIGKILL)
    home = Path(handle["home"])
    assert (home / ".s3cfg").exists(), "the crash should have left the credentials file"
    assert _status(platform, sid)["status"] == "deploying"

    time.sleep(2)  # older than the cleanup's limit below
    cleanup = _run(
        ["-c", "from flows.maintenance import cleanup; cleanup(stuck_minutes=0.02)"],
        platform.env,
    )
    assert cleanup.returncode == 0, said(cleanup, platform)
    assert not home.exists(), "the stale private home (with ~/.s3cfg) is still there"
    assert group_members(int(handle["pgid"])) == []
    report = _status(platform, sid)
    assert report["status"] == "failed" and "expired" in (report["reason"] or "")
