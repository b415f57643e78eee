"""Shared pieces of the security and load tests: a database of their own, a developer with a
key, a model "deployed" on a fake OpenAI-compatible server, and the API in process.

Imported explicitly (not a conftest), so these tests and the hostile-input tests beside
them stay independent. Each test gets its own SQLite file: the router looks at every
deployed model in the database, so a model another test left behind would change its
choice.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from paddock import accounts, crud
from paddock.config import reset_settings
from paddock.db import session_scope
from paddock.models import Status, Submission

__all__ = ["Dev", "own_database", "settings_env", "new_developer", "deploy_model", "paddock_app"]


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


def deploy_model(endpoint: str, *, name: str = "fake", developer: str = "alice") -> Submission:
    """A submission in status deployed, served at ``endpoint`` (no pipeline ran)."""
    sub = crud.create_submission(
        developer=developer, source=f"org/{name}", display_name=name, generation_params=None
    )
    with session_scope() as session:
        row = session.get(Submission, sub.id)
        assert row is not None
        row.status = Status.deployed
        session.add(row)
    crud.record_deployment(
        submission_id=sub.id, backend="local", endpoint=endpoint, handle={"served_name": name}
    )
    found = crud.get_submission(submission_id=sub.id)
    assert found is not None
    return found


def paddock_app() -> FastAPI:
    from paddock.api.app import create_app

    return create_app()
