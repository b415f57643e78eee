"""How each part is started: its command line, its environment (secrets reach it there,
never through its arguments, which any user of the machine can list), where its log goes,
and the wait until it answers. The Prefect server's database is checked here too, before
anything starts.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx

from deployments.spares import SOCKET_VAR as SPARE_SOCKET_VAR
from paddock.config import Settings
from paddock.launch import SOCKET_VAR as LAUNCHER_SOCKET_VAR
from paddock.nudge import SOCKET_VAR as WORKER_SOCKET_VAR

from .layout import DESCRIBE, POOL, REPO, WORKER, StackError, Urls
from .processes import Part, spawn, tail
from .state import stack_dir

__all__ = [
    "PREFECT_DATABASE_VARS",
    "WORKER_SOCKET_VAR",
    "part_env",
    "check_prefect_database",
    "start_server",
    "start_launcher",
    "start_worker",
    "start_api",
    "start_spares",
    "wait_http",
    "wait_socket",
]


def part_env(settings: Settings, url: Urls) -> dict[str, str]:
    """What every part inherits: this environment (secrets included), pointed at the stack."""
    env = dict(os.environ)
    env.update(
        PADDOCK_HOME=str(settings.home),
        PADDOCK_REPO=str(REPO),  # the deployments' pull step runs flows from here
        PREFECT_API_URL=url.prefect_api,
        PREFECT_HOME=str(settings.home / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PYTHONUNBUFFERED="1",
    )
    # Where the spare keeper takes claims: the worker's flow runs find it here.
    env[SPARE_SOCKET_VAR] = str(stack_dir(settings) / "spares.sock")
    # Where the launcher takes flow runs: the pool's command finds it here.
    env[LAUNCHER_SOCKET_VAR] = str(stack_dir(settings) / "launcher.sock")
    # Where the worker takes nudges: the API wakes it there when it has created a run.
    env[WORKER_SOCKET_VAR] = str(stack_dir(settings) / "worker.sock")
    return env


# Where Prefect's server keeps its database, in the order Prefect 3 reads them: the
# second is the older name, still honoured. Unset: SQLite in the server's home.
PREFECT_DATABASE_VARS = (
    "PREFECT_SERVER_DATABASE_CONNECTION_URL",
    "PREFECT_API_DATABASE_CONNECTION_URL",
)


def _prefect_database(env: dict[str, str]) -> tuple[str, str] | None:
    """(variable, URL) of the database the operator named for Prefect's server, if any."""
    for name in PREFECT_DATABASE_VARS:
        if env.get(name):
            return name, env[name]
    return None


def check_prefect_database(env: dict[str, str]) -> None:
    """Refuse, before anything starts, a Postgres URL Prefect's server cannot use: its
    engine is async-only, so another driver would fail only once the server runs, with
    the reason in its log rather than in front of the operator."""
    named = _prefect_database(env)
    if named is None:
        return
    name, url = named
    scheme = url.split("://", 1)[0]
    if scheme.startswith("postgres") and scheme != "postgresql+asyncpg":
        raise StackError(
            f"{name} names {scheme}://…, but Prefect's server needs the asyncpg driver: "
            "write it as postgresql+asyncpg://user:password@host:5432/database"
        )


def _database(env: dict[str, str], prefect_home: Path) -> str:
    named = _prefect_database(env)
    if named is None:
        return f"SQLite {prefect_home / 'prefect.db'}"
    name, url = named
    return f"{url.split('://', 1)[0]} ({name})"  # never the URL: it may hold a password


def start_server(settings: Settings, url: Urls, env: dict[str, str], logs: Path) -> Part:
    prefect_home = settings.home / "prefect-server"
    env = {**env, "PREFECT_HOME": str(prefect_home)}
    argv = [sys.executable, "-m", "prefect", "server", "start"]
    argv += ["--host", settings.stack_host, "--port", str(settings.prefect_port)]
    where = f"{url.prefect_ui} (UI; API at /api; {_database(env, prefect_home)})"
    part = spawn("server", argv, env, logs / "server.log", where)
    part.port = settings.prefect_port
    return part


def start_launcher(env: dict[str, str], logs: Path) -> Part:
    argv = [sys.executable, "-m", "paddock.launcher"]
    where = f"Prefect and the stages' libraries imported ahead (runs at {env[LAUNCHER_SOCKET_VAR]})"
    return spawn("launcher", argv, env, logs / "launcher.log", where)


def start_worker(env: dict[str, str], logs: Path) -> Part:
    # Prefect's process worker, also woken by the API the moment it creates a run
    # (`paddock.stack.worker`). Its poll, every second rather than Prefect's default ten,
    # finds the runs nobody nudged it for (a retry from the UI) within a second too.
    env = {**env, "PREFECT_WORKER_QUERY_SECONDS": env.get("PREFECT_WORKER_QUERY_SECONDS", "1")}
    argv = [sys.executable, "-m", "paddock.stack.worker", "--pool", POOL, "--name", WORKER]
    where = f"work pool {POOL!r} (nudged at {env[WORKER_SOCKET_VAR]})"
    return spawn("worker", argv, env, logs / "worker.log", where)


def start_api(settings: Settings, url: Urls, env: dict[str, str], logs: Path) -> Part:
    argv = [sys.executable, "-m", "paddock.cli", "serve"]
    argv += ["--host", settings.stack_host, "--port", str(settings.api_port)]
    part = spawn("api", argv, env, logs / "api.log", f"{url.api} (web; OpenAPI at /docs)")
    part.port = settings.api_port
    return part


def start_spares(env: dict[str, str], logs: Path) -> Part:
    argv = [sys.executable, "-m", "deployments.spare_keeper"]
    where = f"a vLLM interpreter imported ahead (claims at {env[SPARE_SOCKET_VAR]})"
    return spawn("spares", argv, env, logs / "spares.log", where)


def wait_socket(part: Part, path: Path, timeout: float) -> None:
    """Until the part listens at `path` (the spare keeper and the launcher bind their
    sockets before they import anything heavy)."""
    deadline = time.monotonic() + timeout
    while not path.is_socket():
        if not part.alive():
            raise _exited(part)
        if time.monotonic() > deadline:
            raise StackError(
                f"{DESCRIBE[part.name]} was not listening at {path} within {timeout:.0f} s; "
                f"see {part.log}"
            )
        time.sleep(0.1)


def wait_http(part: Part, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not part.alive():
            raise _exited(part)
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise StackError(
        f"{DESCRIBE[part.name]} did not answer at {url} within {timeout:.0f} s; see {part.log}"
    )


def _exited(part: Part) -> StackError:
    return StackError(
        f"{DESCRIBE[part.name]} exited while starting; its log {part.log} ends: {tail(part.log)}"
    )
