"""A throw-away PostgreSQL server on 127.0.0.1 from Debian's binaries.

Why: SQLite is paddock's embedded default, but production runs on PostgreSQL; the
tests that guard that path (dialect differences, concurrent writers, Prefect's
server database) need a real one. No Docker here, so we run Debian's server
binaries directly: ``initdb`` into a temporary directory, ``pg_ctl start`` with TCP on
``127.0.0.1:<free port>`` and ``trust`` authentication, ~1 s in all.

Binaries: ``/usr/lib/postgresql/<major>/bin`` (highest major wins). If missing::

    apt-get update && apt-get install -y postgresql

PostgreSQL refuses to run as root, so when we are root the data directory is
chowned to the ``postgres`` OS user (created by the Debian package) and every
server command runs through ``runuser -u postgres --``. The directory is created
with :func:`tempfile.mkdtemp` under the system temp dir (not pytest's
``tmp_path``, whose 0700 parent is not reachable by ``postgres``). The Unix socket
goes into that directory too, so ``/var/run/postgresql`` is never needed.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Final

from paddock.testkit.ports import free_port
from paddock.testkit.server import LocalServer

__all__ = ["PostgresServer", "available", "find_bin_dir"]

_BIN_GLOB: Final = "/usr/lib/postgresql/*/bin"
OS_USER: Final = "postgres"
DB_USER: Final = "postgres"


def find_bin_dir() -> Path | None:
    """Directory with ``initdb``/``pg_ctl``/``postgres`` (highest major), or None."""
    candidates = []
    for d in glob.glob(_BIN_GLOB):
        p = Path(d)
        if all((p / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            try:
                major = int(p.parent.name.split(".")[0])
            except ValueError:
                major = 0
            candidates.append((major, p))
    if not candidates:
        return None
    return max(candidates)[1]


def available() -> bool:
    """True when PostgreSQL server binaries are installed (and, as root, the
    ``postgres`` OS user exists to run them)."""
    if find_bin_dir() is None:
        return False
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam(OS_USER)
        except KeyError:
            return False
        return shutil.which("runuser") is not None
    return True


class PostgresServer(LocalServer):
    """``initdb`` + ``pg_ctl`` into a private temp dir; a context manager.

    ::

        with PostgresServer() as pg:
            engine = sqlalchemy.create_engine(pg.url)

    ``url`` is a SQLAlchemy URL (psycopg2 driver); ``dsn`` a libpq URI.
    """

    def __init__(self, *, port: int | None = None, database: str = "postgres") -> None:
        self.port = port or free_port()
        self.database = database
        self.base_dir: Path | None = None
        self._bin: Path | None = None
        self._running = False

    # -- addresses --------------------------------------------------------------

    @property
    def url(self) -> str:
        """``postgresql+psycopg2://postgres@127.0.0.1:PORT/postgres`` for SQLAlchemy."""
        return f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{self.port}/{self.database}"

    @property
    def async_url(self) -> str:
        """The same database for an asyncpg engine (e.g. Prefect's server)."""
        return f"postgresql+asyncpg://{DB_USER}@127.0.0.1:{self.port}/{self.database}"

    @property
    def dsn(self) -> str:
        """libpq connection URI (``psql``, ``psycopg2.connect``)."""
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/{self.database}"

    @property
    def data_dir(self) -> Path:
        if self.base_dir is None:
            raise RuntimeError("server not started")
        return self.base_dir / "data"

    # -- lifecycle --------------------------------------------------------------

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert self._bin is not None and self.base_dir is not None
        cmd = [str(self._bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", OS_USER, "--", *cmd]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update({"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "TZ": "UTC"})
        proc = subprocess.run(
            cmd, cwd=self.base_dir, env=env, capture_output=True, text=True, check=False
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({proc.returncode}):\n"
                f"{proc.stdout}\n{proc.stderr}\n{self.log_text()}"
            )
        return proc

    def log_text(self) -> str:
        """The server log (for failure messages)."""
        if self.base_dir is None:
            return ""
        log = self.base_dir / "postgres.log"
        try:
            return log.read_text(errors="replace")
        except OSError:
            return ""

    def start(self, *, timeout: int = 60) -> PostgresServer:
        """initdb + start; returns once the server accepts connections."""
        if self._running:
            return self
        bin_dir = find_bin_dir()
        if bin_dir is None or not available():
            raise RuntimeError(
                "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin; "
                "install them with: apt-get update && apt-get install -y postgresql"
            )
        self._bin = bin_dir
        self.base_dir = Path(tempfile.mkdtemp(prefix="paddock-pg-"))
        try:
            if os.geteuid() == 0:
                shutil.chown(self.base_dir, user=OS_USER, group=OS_USER)
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                DB_USER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
                "--no-instructions",
            )
            opts = (
                f"-h 127.0.0.1 -p {self.port} -k {self.base_dir} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=200"
            )
            self._run(
                "pg_ctl",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.base_dir / "postgres.log"),
                "-o",
                opts,
                "-w",
                "-t",
                str(timeout),
                "start",
            )
            self._running = True
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        import psycopg2

        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = psycopg2.connect(self.dsn, connect_timeout=2)
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
                continue
            conn.close()
            return

    def stop(self) -> None:
        """Fast shutdown and remove the data directory (idempotent)."""
        if self.base_dir is None:
            return
        try:
            if self._running or (self.data_dir / "postmaster.pid").exists():
                proc = self._run(
                    "pg_ctl",
                    "-D",
                    str(self.data_dir),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    "30",
                    "stop",
                    check=False,
                )
                if proc.returncode != 0 and (self.data_dir / "postmaster.pid").exists():
                    self._run(
                        "pg_ctl",
                        "-D",
                        str(self.data_dir),
                        "-m",
                        "immediate",
                        "-w",
                        "stop",
                        check=False,
                    )
        finally:
            self._running = False
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None

    def create_database(self, name: str) -> str:
        """``CREATE DATABASE name``; returns a SQLAlchemy URL for it."""
        import psycopg2

        conn = psycopg2.connect(self.dsn)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{self.port}/{name}"

    @property
    def running(self) -> bool:
        return self._running
