"""The command line, black-box: a fresh paddock home, a hub mirror and an S3 store."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.utils.vllm import chat, needs_vllm, pid_alive

ROOT = Path(__file__).resolve().parents[1]


def paddock(
    *args: str, env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paddock.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=ROOT,
    )


@pytest.fixture
def cli_env(tmp_path: Path, hub: Any, s3: Any) -> dict[str, str]:
    """A fresh machine's environment: only seeds for the blocks, nothing configured yet."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PADDOCK_", "PREFECT_"))}
    env.update(
        PADDOCK_HOME=str(tmp_path / "home"),
        HF_ENDPOINT=hub.endpoint,
        PADDOCK_STORE_URL="s3://models/cli",
        PADDOCK_S3_ENDPOINT_URL=s3.endpoint,
        PADDOCK_S3_ACCESS_KEY_ID=s3.access_key,
        PADDOCK_S3_SECRET_ACCESS_KEY=s3.secret_key,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    return env


def test_invalid_params_are_refused_before_anything_is_created(cli_env: dict[str, str]) -> None:
    result = paddock("submit", "paddock-test/tiny", "--param", "top_p=2", env=cli_env)
    assert result.returncode == 2
    assert "top_p" in result.stderr
    listing = paddock("list", "--json", env=cli_env)
    assert json.loads(listing.stdout) == []


def test_submit_without_wait_returns_at_once_and_the_flow_runs_detached(
    cli_env: dict[str, str],
) -> None:
    import time

    started = time.monotonic()
    result = paddock("submit", "paddock-test/does-not-exist", "--json", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 15  # no Prefect start, no download: just the record
    submission_id = json.loads(result.stdout)["id"]

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        status = json.loads(paddock("status", submission_id, "--json", env=cli_env).stdout)
        if status["status"] == "failed":
            break
        time.sleep(2)
    assert status["status"] == "failed" and status["failed_stage"] == "download"
    assert "not found" in status["reason"]


def test_status_of_unknown_submission(cli_env: dict[str, str]) -> None:
    result = paddock("status", "nope", env=cli_env)
    assert result.returncode == 2 and "no submission" in result.stderr


@pytest.mark.vllm
@needs_vllm
def test_submit_wait_deploys_and_teardown_stops(cli_env: dict[str, str], s3: Any) -> None:
    result = paddock(
        "submit",
        "paddock-test/tiny",
        "--revision",
        "v1",
        "--name",
        "tiny-cli",
        "--param",
        "temperature=0.7",
        "--wait",
        "--json",
        env=cli_env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["status"] == "deployed"
    names = [s["name"] for s in report["stages"]]
    assert names == [
        "download",
        "sanity",
        "runtime",
        "serialize",
        "upload",
        "deploy",
        "warmup",
        "stress",
        "publish",
    ]
    assert all(s["status"] == "succeeded" and s["seconds"] > 0 for s in report["stages"])
    assert report["revision"] and len(report["revision"]) == 40
    assert report["stress"]["passed"] is True

    status = json.loads(paddock("status", report["id"], "--json", env=cli_env).stdout)
    assert status["id"] == report["id"] and status["status"] == "deployed"
    tensors = next(a for a in status["artifacts"] if a["uri"].endswith("/model.tensors"))
    bucket, key = tensors["uri"].removeprefix("s3://").split("/", 1)
    body = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == tensors["sha256"]
    assert len(body) == tensors["size"]

    endpoint = status["endpoint"]
    reply = chat(endpoint, "tiny-cli", "Hello", max_tokens=8)
    assert reply.status_code == 200

    again = paddock("stress", report["id"], "--profile", "smoke", "--json", env=cli_env)
    assert again.returncode == 0, again.stderr[-2000:]
    figures = json.loads(again.stdout)
    assert figures["passed"] is True and figures["completed"] > 0

    pid = _server_pid(cli_env, report["id"])
    down = paddock("teardown", report["id"], env=cli_env)
    assert down.returncode == 0, down.stderr
    assert not pid_alive(pid)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{endpoint}/health", timeout=5)
    final = json.loads(paddock("status", report["id"], "--json", env=cli_env).stdout)
    assert final["status"] == "torndown" and final["endpoint"] is None


def _server_pid(env: dict[str, str], submission_id: str) -> int:
    code = (
        "from paddock import crud; "
        f"print(crud.active_deployment(submission_id={submission_id!r}).handle['pid'])"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return int(out.stdout.strip())


def test_the_command_line_is_built_without_the_database_layer() -> None:
    """A command the API answers (`paddock submit` against the stack) never pays for
    SQLAlchemy and the tables: 0.9–1.2 s to `--help` with them here, 0.35–0.5 s without."""
    code = (
        "import sys, paddock.cli; "
        "print([m for m in ('sqlalchemy', 'sqlmodel', 'paddock.models') if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_costs_offers_every_grouping_the_report_knows() -> None:
    from typing import get_args

    from paddock import costs
    from paddock.cli import costs as command

    assert get_args(command.By) == get_args(costs.By)
