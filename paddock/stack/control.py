"""`paddock up` and `paddock down`: bring the parts up in order (configuring Prefect
between them), report what runs where, and stop it all again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from paddock.config import get_settings

from .automations import replace_automations, save_hook_block
from .layout import DESCRIBE, ORDER, StackError, urls
from .parts import (
    LAUNCHER_SOCKET_VAR,
    SPARE_SOCKET_VAR,
    WORKER_SOCKET_VAR,
    check_prefect_database,
    part_env,
    start_api,
    start_launcher,
    start_server,
    start_spares,
    start_worker,
    wait_http,
    wait_socket,
)
from .processes import Part, missing_env, port_taken, stop_part, wait_closed
from .registration import deploy, ensure_pool, prefect_client, wait_worker
from .state import load, save, stack_dir, state_path

__all__ = ["Row", "Report", "up", "down"]

_WAIT_SERVER = 180.0  # seconds; ~18 s on two busy cores, SQLite migrations included
_WAIT_PART = 120.0


@dataclass(frozen=True)
class Row:
    """A line of `paddock up`'s table."""

    part: str
    where: str
    pid: int
    log: str
    state: str  # "started" or "already running"


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    deployments: list[str] = field(default_factory=list)
    automations: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def started(self) -> list[str]:
        return [r.part for r in self.rows if r.state == "started"]


def up(*, redeploy: bool = False, progress: Callable[[str], None] | None = None) -> Report:
    """Start whatever part of the stack is not running and configure Prefect for it.

    A second `up` finds the parts running and only says so; a part that died is started
    again. A port something else holds stops `up` before anything starts. What this call
    started is stopped again if it fails. `redeploy` registers the deployments and the
    automations again even when nothing had to start (after editing prefect.yaml,
    ops/automations.yaml or the SLA).
    """
    say = progress or (lambda _msg: None)
    began = time.monotonic()
    settings = get_settings()
    url = urls(settings)
    parts, configured = load(settings)
    alive = {name: part for name, part in parts.items() if part.alive()}
    report = Report()
    if set(alive) == set(ORDER) and configured and not redeploy:
        report.rows = [_row(alive[name], "already running") for name in ORDER]
        report.warnings += _older_worker(alive["worker"])
        report.seconds = time.monotonic() - began
        return report

    ports = {"server": settings.prefect_port, "api": settings.api_port}
    for name, port in ports.items():
        if name not in alive and port_taken(settings.stack_host, port):
            raise StackError(
                f"port {port} ({DESCRIBE[name]}) on {settings.stack_host} is already in use "
                f"by another program; stop it or set PADDOCK_"
                f"{'PREFECT' if name == 'server' else 'API'}_PORT to a free port"
            )

    logs = stack_dir(settings) / "logs"
    env = part_env(settings, url)
    check_prefect_database(env)
    started: dict[str, Part] = {}
    try:
        if "server" not in alive:
            say(f"starting the Prefect server on {url.prefect_ui}")
            started["server"] = start_server(settings, url, env, logs)
            save(settings, {**alive, **started}, configured=False)
        if "launcher" not in alive:  # its imports overlap the server's start
            say("starting the flow-run launcher")
            started["launcher"] = start_launcher(env, logs)
            save(settings, {**alive, **started}, configured=False)
        server = alive.get("server") or started["server"]
        wait_http(server, f"{url.prefect_api}/health", _WAIT_SERVER)
        launcher = alive.get("launcher") or started["launcher"]
        wait_socket(launcher, Path(env[LAUNCHER_SOCKET_VAR]), _WAIT_PART)
        since = time.time()
        with prefect_client(url) as client:
            ensure_pool(client)
            if "worker" not in alive:
                say("starting the worker")
                started["worker"] = start_worker(env, logs)
            if "api" not in alive:
                say(f"starting the paddock API on {url.api}")
                started["api"] = start_api(settings, url, env, logs)
            save(settings, {**alive, **started}, configured=False)
            reconfigure = "server" in started or not configured or redeploy
            if reconfigure:
                say("registering the deployments of prefect.yaml")
                report.deployments, warning = deploy(env, logs, client)
                if warning:
                    report.warnings.append(warning)
                say("creating the SLA webhook block and the automations")
                report.automations = replace_automations(client, settings, save_hook_block(url))
            worker = alive.get("worker") or started["worker"]
            wait_worker(client, worker, since if "worker" in started else 0.0, _WAIT_PART)
        api = alive.get("api") or started["api"]
        wait_http(api, f"{url.api}/openapi.json", _WAIT_PART)
        if "spares" not in alive:  # it reads the serving target from the Prefect server
            say("starting the spare keeper")
            started["spares"] = start_spares(env, logs)
            save(settings, {**alive, **started}, configured=False)
        spares = alive.get("spares") or started["spares"]
        wait_socket(spares, Path(env[SPARE_SOCKET_VAR]), _WAIT_PART)
    except BaseException:
        for name in reversed(ORDER):
            if name in started:
                stop_part(started[name])
        save(settings, alive, configured=configured)
        raise
    save(settings, {**alive, **started}, configured=True)
    if "worker" in alive:
        report.warnings += _older_worker(alive["worker"])
    report.rows = [
        _row(started.get(name) or alive[name], "started" if name in started else "already running")
        for name in ORDER
    ]
    report.seconds = time.monotonic() - began
    return report


def _older_worker(worker: Part) -> list[str]:
    """A worker an older `up` started (still running, so left alone) lacks the variables
    that lead its runs to the launcher and the spare keeper, and the socket the API
    wakes it on: its runs start without them, a poll later."""
    missing = missing_env(worker.pid, (LAUNCHER_SOCKET_VAR, SPARE_SOCKET_VAR, WORKER_SOCKET_VAR))
    if not missing:
        return []
    return [
        f"the worker (pid {worker.pid}) was started by an older `paddock up`, without "
        f"{' and '.join(missing)}: its runs start without the launcher and the spare "
        "keeper, and wait for its poll; run `paddock down && paddock up` when no run is "
        "under way"
    ]


def _row(part: Part, state: str) -> Row:
    return Row(part=part.name, where=part.where, pid=part.pid, log=part.log, state=state)


def down() -> list[str]:
    """Stop every recorded part (worker first), and check nothing still holds the ports.

    Returns the names of the parts that were running.
    """
    settings = get_settings()
    parts, _ = load(settings)
    stopped = [name for name in reversed(ORDER) if name in parts and parts[name].alive()]
    for name in ("worker", "launcher", "api", "spares", "server"):
        if name in parts:
            stop_part(parts[name])
    state_path(settings).unlink(missing_ok=True)
    busy = [
        p.port
        for p in parts.values()
        if p.port is not None and wait_closed(settings.stack_host, p.port)
    ]
    if busy:
        raise StackError(
            f"port {busy[0]} is still in use after stopping the stack; another program holds it"
        )
    return stopped
