"""`paddock up` with Postgres holding both databases: the multi-machine set-up, on one box.

One real Postgres server (paddock.testkit.postgres) with two databases: `prefect`, named
to Prefect's server by PREFECT_SERVER_DATABASE_CONNECTION_URL (asyncpg), and `paddock`,
named to every paddock part by PADDOCK_DATABASE_URL. The stack is brought up by the real
command, the scheduled `feedback` flow is run through its deployment to Completed, a
submission is run through the `submission` deployment (it fails in download: its source
directory holds no model), and the rows are read back from Postgres itself: Prefect's
`flow_run` table and paddock's own tables, with no SQLite file written by either.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from paddock.testkit import postgres
from paddock.testkit.ports import free_port
from tests.ops.test_stack import listening, paddock

pytestmark = pytest.mark.skipif(
    not postgres.available(), reason="PostgreSQL server binaries are not installed"
)

FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


@pytest.fixture(scope="module")
def pg() -> Iterator[postgres.PostgresServer]:
    with postgres.PostgresServer() as server:
        yield server


def rows(server: postgres.PostgresServer, database: str, sql: str, *args: Any) -> list[Any]:
    import psycopg2

    dsn = server.dsn.rsplit("/", 1)[0] + f"/{database}"
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def wait_run(prefect: str, run_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run: dict[str, Any] = httpx.get(f"{prefect}/flow_runs/{run_id}", timeout=10).json()
        if run["state_type"] in FINAL:
            return run
        assert time.monotonic() < deadline, f"flow run still {run['state_type']}"
        time.sleep(0.5)


def test_up_on_postgres_keeps_prefects_and_paddocks_rows_there(
    pg: postgres.PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefect_db = pg.create_database("prefect").replace("postgresql+psycopg2", "postgresql+asyncpg")
    paddock_db = pg.create_database("paddock")
    root = Path(tempfile.mkdtemp(prefix="paddock-pg-stack-"))
    home = root / "home"
    (home / "sources" / "empty").mkdir(parents=True)
    prefect_port, api_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PADDOCK_", "PREFECT_"))}
    env.update(
        PADDOCK_HOME=str(home),
        PADDOCK_DATABASE_URL=paddock_db,
        PREFECT_SERVER_DATABASE_CONNECTION_URL=prefect_db,
        PADDOCK_PREFECT_PORT=str(prefect_port),
        PADDOCK_API_PORT=str(api_port),
        PADDOCK_HOOK_SECRET=uuid.uuid4().hex,
        PADDOCK_ALLOWED_SOURCE_DIRS=json.dumps([str(home / "sources")]),
        PADDOCK_RETRY_BASE_SECONDS="0.05",
        PADDOCK_SERVING_PYTHON=str(home / "no-serving-venv" / "bin" / "python"),
        PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false",  # runs only when asked for
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    prefect = f"http://127.0.0.1:{prefect_port}/api"
    passed = False
    try:
        began = time.monotonic()
        up = paddock("up", env=env, timeout=600)
        up_s = time.monotonic() - began
        assert up.returncode == 0, up.stdout + up.stderr
        state = json.loads((home / "stack" / "state.json").read_text())
        where = state["parts"]["server"]["where"]
        assert "postgresql+asyncpg (PREFECT_SERVER_DATABASE_CONNECTION_URL)" in where, where
        assert prefect_db not in up.stdout + up.stderr + where  # no URL is ever printed

        # The test's own process writes to paddock's database as an operator would.
        for name, value in env.items():
            if name.startswith("PADDOCK_"):
                monkeypatch.setenv(name, value)
        monkeypatch.delenv("PADDOCK_API_URL", raising=False)
        from paddock import accounts
        from paddock.config import reset_settings

        reset_settings()
        developer = accounts.create_developer(name=f"dev-{uuid.uuid4().hex[:8]}")
        key = accounts.issue_key(developer_id=developer.id)

        # A cheap flow through its deployment, run by the worker, to Completed.
        began = time.monotonic()
        deployment = httpx.get(f"{prefect}/deployments/name/feedback/feedback", timeout=10).json()
        created = httpx.post(
            f"{prefect}/deployments/{deployment['id']}/create_flow_run", json={}, timeout=10
        )
        assert created.status_code == 201, created.text
        feedback = wait_run(prefect, created.json()["id"], timeout=300)
        feedback_s = time.monotonic() - began
        assert feedback["state_type"] == "COMPLETED", feedback["state"]

        # A submission through the API and the submission deployment.
        began = time.monotonic()
        with httpx.Client(
            base_url=f"http://127.0.0.1:{api_port}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        ) as api:
            resp = api.post("/submissions", json={"source": str(home / "sources" / "empty")})
            assert resp.status_code == 201, resp.text
            sub_id = resp.json()["id"]
            deadline = time.monotonic() + 300
            while (report := api.get(f"/submissions/{sub_id}").json())["status"] != "failed":
                assert time.monotonic() < deadline, report
                time.sleep(0.5)
        assert report["failed_stage"] == "download", report
        runs = httpx.post(
            f"{prefect}/flow_runs/filter",
            json={"flow_runs": {"tags": {"all_": [f"submission:{sub_id}"]}}},
            timeout=10,
        ).json()
        assert len(runs) == 1
        submission_run = wait_run(prefect, runs[0]["id"], timeout=120)
        submission_s = time.monotonic() - began

        # Prefect's rows, in Prefect's Postgres database.
        found = dict(
            rows(
                pg,
                "prefect",
                "SELECT id::text, state_type::text FROM flow_run WHERE id::text = ANY(%s)",
                [feedback["id"], submission_run["id"]],
            )
        )
        assert found == {
            feedback["id"]: "COMPLETED",
            submission_run["id"]: submission_run["state_type"],
        }
        assert rows(pg, "prefect", "SELECT count(*) FROM deployment")[0][0] >= 5

        # paddock's rows, in paddock's Postgres database, written by the API and by the
        # flow runs the worker started.
        assert rows(pg, "paddock", "SELECT status FROM submissions WHERE id = %s", sub_id) == [
            ("failed",)
        ]
        stages = rows(
            pg, "paddock", "SELECT stage, status FROM stage_runs WHERE submission_id = %s", sub_id
        )
        assert stages == [("download", "rejected")], stages  # no model: refused
        assert rows(pg, "paddock", "SELECT count(*) FROM leaderboard_snapshots")[0][0] == 1
        assert rows(pg, "paddock", "SELECT name FROM developers WHERE id = %s", developer.id)

        # Neither database fell back to SQLite anywhere under the home.
        assert not list(home.rglob("*.db")), list(home.rglob("*.db"))
        print(
            f"\npostgres stack: up {up_s:.1f} s, feedback run {feedback_s:.1f} s, "
            f"submission to failed-in-download {submission_s:.1f} s"
        )
        passed = True
    finally:
        down = paddock("down", env=env)
        from paddock.config import reset_settings

        reset_settings()
        if passed:
            assert down.returncode == 0, down.stdout + down.stderr
            shutil.rmtree(root, ignore_errors=True)


def test_up_refuses_a_postgres_url_prefect_cannot_use_before_starting_anything(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PADDOCK_", "PREFECT_"))}
    port = free_port()
    env.update(
        PADDOCK_HOME=str(tmp_path / "home"),
        PADDOCK_PREFECT_PORT=str(port),
        PADDOCK_API_PORT=str(free_port()),
        PREFECT_API_DATABASE_CONNECTION_URL="postgresql://prefect:s3cret@db.example:5432/prefect",
    )
    up = paddock("up", env=env, timeout=120)
    assert up.returncode != 0
    said = " ".join((up.stdout + up.stderr).split())
    assert "PREFECT_API_DATABASE_CONNECTION_URL names postgresql://" in said, said
    assert "postgresql+asyncpg://" in said and "s3cret" not in said
    assert not (tmp_path / "home" / "stack" / "state.json").exists()
    assert not listening(port)
