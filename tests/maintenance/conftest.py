"""Maintenance fixtures: a fresh database per test and real server processes.

The planners look at every row, so each test gets its own SQLite file. A "server" is a
`sleep` process group recorded as a local-backend deployment: stopping it is stopping a
real process group, the way vLLM is stopped.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from paddock import crud
from paddock.config import reset_settings
from tests.chat.conftest import backend as backend  # kmock's Kubernetes, models parkable
from tests.deployments.kube import k8s as k8s

Serve = Callable[[str], int]


@pytest.fixture(autouse=True)
def maintenance_db(tmp_path: Path) -> Iterator[str]:
    old = os.environ.get("PADDOCK_DATABASE_URL")
    url = f"sqlite:///{tmp_path / 'maintenance.db'}"
    os.environ["PADDOCK_DATABASE_URL"] = url
    reset_settings()
    yield url
    if old is None:
        os.environ.pop("PADDOCK_DATABASE_URL", None)
    else:
        os.environ["PADDOCK_DATABASE_URL"] = old
    reset_settings()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """Start a process group and record it as an active local deployment; returns its pid."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(submission_id: str) -> int:
        proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
        procs.append(proc)
        log = tmp_path / f"server-{proc.pid}.log"
        log.write_text("")
        crud.record_deployment(
            submission_id=submission_id,
            backend="local",
            endpoint=f"http://127.0.0.1:9/{proc.pid}",
            handle={"pid": proc.pid, "pgid": proc.pid, "log_path": str(log), "port": 9},
        )
        return proc.pid

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
