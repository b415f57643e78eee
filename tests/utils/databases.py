"""One test on SQLite and on a real Postgres: the ``database`` fixture runs it on both.

Races and state changes are where the two differ (locks, isolation, what a compare-and-set
sees), so the tests that check them take ``database`` and run twice. Postgres is a real
server from the testkit, one per test module; without its binaries those cases skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from paddock.config import reset_settings
from paddock.db import init_db
from paddock.testkit import postgres

__all__ = ["pg_url", "database"]


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    if not postgres.available():
        pytest.skip("no Postgres binaries (apt-get install postgresql; .ci/run does this)")
    with postgres.PostgresServer() as server:
        yield server.url


@pytest.fixture(params=["sqlite", "postgres"])
def database(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[str]:
    """PADDOCK_DATABASE_URL for one test, on each database in turn."""
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite:///{tmp_path / 'paddock.db'}"
    monkeypatch.setenv("PADDOCK_DATABASE_URL", url)
    reset_settings()
    init_db()  # before any race: two threads creating one engine's tables at once collide
    yield url
    monkeypatch.delenv("PADDOCK_DATABASE_URL")
    reset_settings()
