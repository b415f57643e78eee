"""The command line over a real API server: PADDOCK_API_URL set, no database of its own."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from paddock import accounts, crud
from paddock.runner import flow_log_path
from paddock.testkit.ports import free_port, wait_for_port
from tests.api.conftest import Api, Dev, make_submission

ROOT = Path(__file__).resolve().parents[2]


def paddock(
    *args: str, env: dict[str, str], stdin: str = "", timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paddock.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=ROOT,
    )


def one_sentence(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 2 with `error: …` naming the problem: no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for word in words:
        assert word in result.stderr.replace("\n", " "), result.stderr


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "cli-home"


@pytest.fixture
def env(api: Api, home: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PADDOCK_", "PREFECT_"))}
    return {**clean, "PADDOCK_HOME": str(home), "PADDOCK_API_URL": api.url}


def test_login_checks_the_key_and_stores_it_for_its_owner_only(
    env: dict[str, str], home: Path, dev: Dev, api: Api
) -> None:
    result = paddock("login", env=env, stdin=dev.key + "\n")
    assert result.returncode == 0, result.stderr
    assert dev.name in result.stdout
    assert dev.key not in result.stdout + result.stderr
    stored = home / "credentials.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert json.loads(stored.read_text()) == {
        "api_url": api.url,
        "developer": dev.name,
        "key": dev.key,
    }
    me = paddock("whoami", "--json", env=env)
    assert me.returncode == 0, me.stderr
    assert json.loads(me.stdout)["name"] == dev.name

    out = paddock("logout", env=env)
    assert out.returncode == 0 and api.url in out.stdout
    assert not stored.exists()
    one_sentence(paddock("whoami", env=env), "no API key", "paddock login")


def test_login_with_a_wrong_key_stores_nothing(env: dict[str, str], home: Path) -> None:
    one_sentence(paddock("login", env=env, stdin="pdk_wrong\n"), "unknown API key")
    assert not (home / "credentials.json").exists()


def test_a_revoked_key_is_one_sentence(env: dict[str, str], dev: Dev) -> None:
    accounts.revoke_key(developer_id=dev.id, prefix=dev.key[: accounts.PREFIX_LENGTH])
    one_sentence(paddock("list", env={**env, "PADDOCK_API_KEY": dev.key}), "revoked")


def test_an_unreachable_api_is_one_sentence(env: dict[str, str], dev: Dev) -> None:
    away = f"http://127.0.0.1:{free_port()}"
    result = paddock("list", env={**env, "PADDOCK_API_URL": away, "PADDOCK_API_KEY": dev.key})
    one_sentence(result, "cannot reach the paddock API", away)


def test_a_stored_key_is_only_sent_to_the_api_it_was_stored_for(
    env: dict[str, str], dev: Dev
) -> None:
    assert paddock("login", env=env, stdin=dev.key).returncode == 0
    away = f"http://127.0.0.1:{free_port()}"
    one_sentence(paddock("list", env={**env, "PADDOCK_API_URL": away}), "no API key for")


def test_submit_over_the_api_records_starts_and_follows_the_run(
    env: dict[str, str], home: Path, dev: Dev, api: Api
) -> None:
    env = {**env, "PADDOCK_API_KEY": dev.key}
    result = paddock(
        "submit",
        "paddock-test/unreachable",
        "--name",
        "from-cli",
        "--param",
        "temperature=0.5",
        "--wait",
        "--json",
        env=env,
    )
    assert result.returncode == 1, result.stderr  # followed to the end: it did not deploy
    report = json.loads(result.stdout)
    assert report["status"] == "failed" and report["failed_stage"] == "download"
    assert "download: failed" in result.stderr  # progress, one line per stage change

    sub = crud.require_submission(submission_id=report["id"])
    assert sub.developer == dev.name and sub.display_name == "from-cli"
    assert sub.generation_params["temperature"] == 0.5
    assert flow_log_path(sub.id).is_relative_to(api.home) and flow_log_path(sub.id).exists()
    assert not (home / "paddock.db").exists()  # the CLI never opened a database

    with api.client(dev.key) as client:
        assert json.loads(paddock("status", sub.id, "--json", env=env).stdout) == (
            client.get(f"/submissions/{sub.id}").json()
        )
        assert json.loads(paddock("list", "--json", env=env).stdout) == (
            client.get("/submissions").json()
        )
    table = paddock("status", env=env)  # the newest of yours, as a table
    assert table.returncode == 0 and sub.id in table.stdout and "download" in table.stdout


def test_invalid_params_over_the_api_name_the_field(env: dict[str, str], dev: Dev) -> None:
    env = {**env, "PADDOCK_API_KEY": dev.key}
    for param in ("top_p=2", "top_k=many", "temprature=1"):
        result = paddock("submit", "org/model", "--param", param, env=env)
        one_sentence(result, param.split("=")[0])
    assert crud.list_submissions(developer=dev.name) == []


def test_another_developers_submission_is_not_found(
    env: dict[str, str], dev: Dev, other: Dev
) -> None:
    theirs = make_submission(other)
    env = {**env, "PADDOCK_API_KEY": dev.key}
    one_sentence(paddock("status", theirs, env=env), "no submission")
    one_sentence(paddock("teardown", theirs, env=env), "no submission")


def test_stop_commands_over_the_api(env: dict[str, str], dev: Dev) -> None:
    sub_id = make_submission(dev)
    env = {**env, "PADDOCK_API_KEY": dev.key}
    early = paddock("redeploy", sub_id, env=env)
    one_sentence(early, "only an inactive or torn-down model can be redeployed")
    stopped = paddock("deactivate", sub_id, "--json", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout) == {
        "id": sub_id,
        "status": "inactive",
        "server_stopped": False,
    }
    down = paddock("teardown", sub_id, env=env)
    assert down.returncode == 0 and down.stdout.strip() == f"{sub_id}: torndown"
    one_sentence(paddock("deactivate", sub_id, env=env), "torndown")


def test_database_only_commands_and_options_say_so(env: dict[str, str], dev: Dev) -> None:
    env = {**env, "PADDOCK_API_KEY": dev.key}
    one_sentence(paddock("run", "x", env=env), "PADDOCK_API_URL")
    one_sentence(paddock("stress", "x", env=env), "PADDOCK_API_URL")
    one_sentence(paddock("list", "--developer", "bob", env=env), "--developer")


def test_keys_over_the_api(env: dict[str, str], dev: Dev, api: Api) -> None:
    env = {**env, "PADDOCK_API_KEY": dev.key}
    created = paddock("keys", "create", "--json", env=env)
    assert created.returncode == 0, created.stderr
    new = json.loads(created.stdout)
    listed = json.loads(paddock("keys", "list", "--json", env=env).stdout)
    assert [k["prefix"] for k in listed] == [dev.key[: accounts.PREFIX_LENGTH], new["prefix"]]
    revoked = paddock("keys", "revoke", new["prefix"], env=env)
    assert revoked.returncode == 0, revoked.stderr
    with api.client(new["key"]) as client:
        assert client.get("/developers/me").status_code == 401
    one_sentence(paddock("keys", "revoke", new["prefix"], env=env), "no active key")


def test_paddock_serve(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PADDOCK_", "PREFECT_"))}
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "paddock.cli", "serve", "--port", str(port)],
        env={**clean, "PADDOCK_HOME": str(tmp_path / "served")},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, timeout=60)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/openapi.json").json()["info"]["title"] == "paddock"
        assert httpx.get(f"{base}/developers/me").status_code == 401
    finally:
        server.terminate()
        _, errors = server.communicate(timeout=30)
    # uvicorn shuts down cleanly, then re-raises the signal it got as its exit status.
    assert "Application shutdown complete" in errors, errors
    assert (tmp_path / "served" / "paddock.db").exists()  # the lifespan made the tables
