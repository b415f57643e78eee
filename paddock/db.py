"""The database engine, created once per URL; sessions are short and never shared."""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlmodel import Session, SQLModel, create_engine

from paddock import models  # noqa: F401  (registers the tables)
from paddock.config import get_settings

__all__ = ["get_engine", "session_scope", "init_db"]


@functools.cache
def _engine_for(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: object) -> None:
            # WAL lets the CLI read while a flow process writes.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
    else:
        engine = create_engine(url, pool_pre_ping=True)
    try:
        SQLModel.metadata.create_all(engine)
    except (OperationalError, ProgrammingError) as exc:
        if "already exists" not in str(exc):
            raise
        # Another process created the tables between our look and our CREATE: look again.
        SQLModel.metadata.create_all(engine)
    return engine


_first_use = threading.Lock()  # threads starting at once create the tables once


def get_engine() -> Engine:
    with _first_use:
        return _engine_for(get_settings().db_url)


def init_db() -> None:
    get_engine()


@contextmanager
def session_scope() -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error."""
    with Session(get_engine(), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
