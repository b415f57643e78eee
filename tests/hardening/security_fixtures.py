"""Shared pieces of the security and load tests: a database of their own, a developer with a
key, a model "deployed" on a fake OpenAI-compatible server, and the API in process.

Imported explicitly (not a conftest), so these tests and the hostile-input tests beside
them stay independent. Each test gets its own SQLite file: the router looks at every
deployed model in the database, so a model another test left behind would change its
choice.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from deployments.processes import proc_start
from paddock import accounts, crud
from paddock.config import reset_settings
from paddock.db import session_scope
from paddock.models import Status, Submission

__all__ = [
    "Dev",
    "own_database",
    "settings_env",
    "new_developer",
    "deploy_model",
    "stand_in_process",
    "paddock_app",
]


@dataclass(frozen=True)
class Dev:
    id: str
    name: str
    key: str


@contextmanager
def settings_env(**values: str) -> Iterator[None]:
    """Environment settings for the block's duration (the settings are read afresh)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    reset_settings()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        reset_settings()


@contextmanager
def own_database(directory: Path) -> Iterator[str]:
    url = f"sqlite:///{directory / 'hardening.db'}"
    with settings_env(PADDOCK_DATABASE_URL=url):
        from paddock.db import init_db

        init_db()
        yield url


def new_developer() -> Dev:
    developer = accounts.create_developer(name=f"dev-{uuid.uuid4().hex[:10]}")
    return Dev(developer.id, developer.name, accounts.issue_key(developer_id=developer.id))


def deploy_model(
    endpoint: str,
    *,
    name: str = "fake",
    developer: str = "alice",
    handle: dict[str, Any] | None = None,
) -> Submission:
    """A submission in status deployed, served at ``endpoint`` (no pipeline ran); give a
    ``handle`` (`stand_in_process`) where something may stop the deployment."""
    sub = crud.create_submission(
        developer=developer, source=f"org/{name}", display_name=name, generation_params=None
    )
    with session_scope() as session:
        row = session.get(Submission, sub.id)
        assert row is not None
        row.status = Status.deployed
        session.add(row)
    crud.record_deployment(
        submission_id=sub.id,
        backend="local",
        endpoint=endpoint,
        handle={**(handle or {}), "served_name": name},
    )
    found = crud.get_submission(submission_id=sub.id)
    assert found is not None
    return found


@contextmanager
def stand_in_process(log_dir: Path) -> Iterator[dict[str, Any]]:
    """A local backend's handle on a real process group of this test's own (a `sleep`
    standing in for vLLM), so deactivating or tearing the model down stops something that
    exists, and never anything else."""
    proc = subprocess.Popen(["sleep", "600"], start_new_session=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield {
            "backend": "local",
            "pid": proc.pid,
            "pgid": proc.pid,
            "proc_start": proc_start(proc.pid),
            "log_path": str(log_dir / f"stand-in-{proc.pid}.log"),
            "home": None,
        }
    finally:
        proc.kill()
        proc.wait(timeout=10)


def paddock_app() -> FastAPI:
    from paddock.api.app import create_app

    return create_app()
