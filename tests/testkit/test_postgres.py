"""A real PostgreSQL starts from Debian's binaries and answers queries."""

from __future__ import annotations

import pytest

from paddock.testkit.postgres import PostgresServer, available


@pytest.mark.skipif(
    not available(),
    reason="PostgreSQL server binaries not found (apt-get install -y postgresql)",
)
def test_postgres_select_1() -> None:
    import sqlalchemy as sa

    with PostgresServer() as pg:
        assert pg.url.startswith("postgresql+psycopg2://postgres@127.0.0.1:")
        engine = sa.create_engine(pg.url)
        try:
            with engine.connect() as conn:
                assert conn.execute(sa.text("select 1")).scalar() == 1
        finally:
            engine.dispose()
        other = pg.create_database("paddock_test")
        engine = sa.create_engine(other)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("create table t (x int)"))
                conn.execute(sa.text("insert into t values (42)"))
                assert conn.execute(sa.text("select x from t")).scalar() == 42
        finally:
            engine.dispose()
        base = pg.base_dir
        assert base is not None and base.exists()
    assert not base.exists()
    assert not pg.running
