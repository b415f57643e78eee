"""The running platform on one machine: `paddock up` and `paddock down`.

Three long-lived parts — a Prefect server (API, UI, automations), a worker of the
`paddock` process work pool, and the paddock API/web (`paddock serve`) — each run as a
detached process group whose pid and log are written to PADDOCK_HOME/stack/state.json,
so any shell can find, report and stop them. Between starting them, `up` registers what
lives inside Prefect: the work pool, the deployments of `prefect.yaml`, the webhook block
the SLA automation calls, and the automations of `ops/automations.yaml`.

Every part reads its configuration (secrets included) from the environment it inherits,
never from its arguments, which any user of the machine can list.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx
import yaml

from paddock.config import Settings, get_settings
from paddock.errors import ConfigurationError, PaddockError

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

__all__ = [
    "REPO",
    "POOL",
    "WORKER",
    "HOOK_BLOCK",
    "BREACH_AUTOMATION",
    "NOTIFY_AUTOMATION",
    "StackError",
    "Part",
    "Row",
    "Report",
    "Urls",
    "urls",
    "up",
    "down",
    "running",
    "state_path",
]

REPO = Path(__file__).resolve().parents[1]
POOL = "paddock"
WORKER = "paddock-worker"
HOOK_BLOCK = "paddock-sla-hook"
BREACH_AUTOMATION = "submission-missed-sla"
NOTIFY_AUTOMATION = "submission-sla-breached-notify"
DEPLOYMENT = "submission/submission"
# Start order; `down` stops them the other way round (the worker while its server still
# answers, so it can let go of its runs cleanly).
ORDER = ("server", "worker", "api")
_DESCRIBE = {"server": "the Prefect server", "worker": "the worker", "api": "the paddock API"}
_WAIT_SERVER = 180.0  # seconds; ~18 s on two busy cores, SQLite migrations included
_WAIT_PART = 120.0
_STOP_GRACE = 10.0


class StackError(PaddockError):
    """The stack could not be brought up (or down); the message names what and where."""


@dataclass
class Part:
    """One detached process group of the stack, as recorded in the state file."""

    name: str
    pid: int
    log: str
    where: str
    port: int | None = None
    ticks: int | None = None  # the process's start time in clock ticks: a reused pid differs

    def alive(self) -> bool:
        return _alive(self.pid, self.ticks)


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


@dataclass(frozen=True)
class Urls:
    prefect_api: str
    prefect_ui: str
    api: str
    hook: str


def urls(settings: Settings | None = None) -> Urls:
    settings = settings or get_settings()
    host = settings.stack_host
    # A server listening on every interface is still called on the loopback one.
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    ui = f"http://{local}:{settings.prefect_port}"
    api = f"http://{local}:{settings.api_port}"
    return Urls(prefect_api=f"{ui}/api", prefect_ui=ui, api=api, hook=f"{api}/hooks/sla-breach")


# ----------------------------------------------------------------------------- state


def _stack_dir(settings: Settings) -> Path:
    return settings.home / "stack"


def state_path(settings: Settings | None = None) -> Path:
    return _stack_dir(settings or get_settings()) / "state.json"


def _load(settings: Settings) -> tuple[dict[str, Part], bool]:
    """The recorded parts and whether Prefect was fully configured by an earlier `up`."""
    try:
        data = json.loads(state_path(settings).read_text())
    except (OSError, ValueError):
        return {}, False
    parts = {name: Part(**value) for name, value in data.get("parts", {}).items()}
    return parts, bool(data.get("configured"))


def _save(settings: Settings, parts: dict[str, Part], *, configured: bool) -> None:
    path = state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    body = {"parts": {n: asdict(p) for n, p in parts.items()}, "configured": configured}
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    os.replace(tmp, path)


def running(settings: Settings | None = None) -> dict[str, Part]:
    """The recorded parts whose processes are still alive."""
    parts, _ = _load(settings or get_settings())
    return {name: part for name, part in parts.items() if part.alive()}


# ----------------------------------------------------------------------------- processes


def _start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (None where there is no /proc, or no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has exited; only its parent has not looked yet
        return -1
    return int(fields[19])


def _alive(pid: int, ticks: int | None = None) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child that has exited
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process now has this pid
    now = _start_ticks(pid)
    if now == -1:
        return False
    return ticks is None or now is None or now == ticks


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (flow runs a worker started in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def _stop_part(part: Part, grace: float = _STOP_GRACE) -> None:
    """SIGTERM to the part's group and to every group below it; SIGKILL after `grace`."""
    if not part.alive():
        return
    pids = [part.pid, *_descendants(part.pid)]
    groups: set[int] = set()
    for pid in pids:
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            continue
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in groups:
            try:
                os.killpg(group, sig)
            except (ProcessLookupError, PermissionError):
                continue
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not any(_alive(pid) for pid in pids):
                return
            time.sleep(0.1)


def _spawn(name: str, argv: list[str], env: dict[str, str], log: Path, where: str) -> Part:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=REPO,
            start_new_session=True,  # its own process group, outliving this command
        )
    return Part(name=name, pid=proc.pid, log=str(log), where=where, ticks=_start_ticks(proc.pid))


def _port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(path: str, lines: int = 5) -> str:
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


# ----------------------------------------------------------------------------- parts


def _env(settings: Settings, url: Urls) -> dict[str, str]:
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


def _check_prefect_database(env: dict[str, str]) -> None:
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


def _start_server(settings: Settings, url: Urls, env: dict[str, str], logs: Path) -> Part:
    prefect_home = settings.home / "prefect-server"
    env = {**env, "PREFECT_HOME": str(prefect_home)}
    argv = [sys.executable, "-m", "prefect", "server", "start"]
    argv += ["--host", settings.stack_host, "--port", str(settings.prefect_port)]
    where = f"{url.prefect_ui} (UI; API at /api; {_database(env, prefect_home)})"
    part = _spawn("server", argv, env, logs / "server.log", where)
    part.port = settings.prefect_port
    return part


def _start_worker(env: dict[str, str], logs: Path) -> Part:
    # The worker asks for scheduled runs every few seconds, not Prefect's default ten:
    # every second a run waits is spent from its SLA.
    env = {**env, "PREFECT_WORKER_QUERY_SECONDS": env.get("PREFECT_WORKER_QUERY_SECONDS", "2")}
    argv = [sys.executable, "-m", "prefect", "worker", "start"]
    argv += ["--pool", POOL, "--type", "process", "--name", WORKER]
    return _spawn("worker", argv, env, logs / "worker.log", f"work pool {POOL!r}")


def _start_api(settings: Settings, url: Urls, env: dict[str, str], logs: Path) -> Part:
    argv = [sys.executable, "-m", "paddock.cli", "serve"]
    argv += ["--host", settings.stack_host, "--port", str(settings.api_port)]
    part = _spawn("api", argv, env, logs / "api.log", f"{url.api} (web; OpenAPI at /docs)")
    part.port = settings.api_port
    return part


def _wait_http(part: Part, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not part.alive():
            raise StackError(
                f"{_DESCRIBE[part.name]} exited while starting; its log {part.log} ends: "
                f"{_tail(part.log)}"
            )
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise StackError(
        f"{_DESCRIBE[part.name]} did not answer at {url} within {timeout:.0f} s; see {part.log}"
    )


# ----------------------------------------------------------------------------- Prefect


@contextmanager
def _prefect(url: Urls) -> Iterator[SyncPrefectClient]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url.prefect_api}):
        with get_client(sync_client=True) as client:
            yield client


def _ensure_pool(client: SyncPrefectClient) -> None:
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    try:
        client.read_work_pool(POOL)
    except ObjectNotFound:
        template = ProcessWorker.get_default_base_job_template()
        client.create_work_pool(
            WorkPoolCreate(name=POOL, type="process", base_job_template=template)
        )


def _deploy(env: dict[str, str], logs: Path, client: SyncPrefectClient) -> tuple[list[str], str]:
    """`prefect deploy --all` over prefect.yaml: every deployment, ours and others'.

    Returns the deployments now registered and a warning when some could not be: the
    submission deployment is the one `up` cannot do without.
    """
    from prefect.exceptions import ObjectNotFound

    log = logs / "deploy.log"
    with log.open("ab") as out:
        done = subprocess.run(
            [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=REPO,
            timeout=600,
        )
    names = _deployments(client)
    try:
        client.read_deployment_by_name(DEPLOYMENT)
    except ObjectNotFound:
        raise StackError(
            f"`prefect deploy --all` did not register {DEPLOYMENT}; see {log}"
        ) from None
    warning = ""
    if done.returncode != 0:
        warning = f"`prefect deploy --all` failed part-way (see {log}): {_tail(str(log), 2)}"
    return names, warning


def _deployments(client: SyncPrefectClient) -> list[str]:
    """`flow/deployment` for every deployment the server has."""
    flows: dict[UUID, str] = {}
    names = []
    for deployment in client.read_deployments():
        if deployment.flow_id not in flows:
            flows[deployment.flow_id] = client.read_flow(deployment.flow_id).name
        names.append(f"{flows[deployment.flow_id]}/{deployment.name}")
    return sorted(names)


def _hook_block(url: Urls) -> UUID:
    """The webhook block the SLA automation calls: the hook's URL and secret, kept in
    Prefect's block store (shown masked in the UI), never in an automation's text."""
    from prefect.blocks.webhook import Webhook

    from paddock.sla import ensure_hook_secret

    block = Webhook(
        method="POST",
        url=url.hook,
        headers={
            "Authorization": f"Bearer {ensure_hook_secret()}",
            "Content-Type": "application/json",
        },
    )
    saved = block.save(HOOK_BLOCK, overwrite=True)
    assert isinstance(saved, UUID)  # called from sync code: not a coroutine
    return saved


def _notify_block(client: SyncPrefectClient, spec: str) -> UUID:
    """The id of the notification block named `type-slug/name`."""
    from prefect.exceptions import ObjectNotFound

    slug, _, name = spec.partition("/")
    if not name:
        raise ConfigurationError(
            f"PADDOCK_SLA_NOTIFY_BLOCK={spec!r} must be `block-type/name`, e.g. "
            "`slack-webhook/on-call`"
        )
    try:
        return client.read_block_document_by_name(name=name, block_type_slug=slug).id
    except ObjectNotFound:
        raise ConfigurationError(
            f"no {slug} block named {name!r} in Prefect; create it in the UI "
            "(Blocks → +) or unset PADDOCK_SLA_NOTIFY_BLOCK"
        ) from None


def automation_specs(
    *,
    deployment_id: UUID,
    sla_seconds: int,
    hook_block: UUID,
    notify_block: UUID | None,
    path: Path | None = None,
) -> list[dict[str, Any]]:
    """ops/automations.yaml with what only a running stack knows filled in.

    The SLA alarm gets the SLA's seconds, the submission deployment's id (so only its
    runs are timed) and the hook block; the notification automation is kept only when a
    notification block is configured.
    """
    data = yaml.safe_load((path or REPO / "ops" / "automations.yaml").read_text())
    specs: list[dict[str, Any]] = []
    for spec in copy.deepcopy(data["automations"]):
        kinds = {action["type"] for action in spec.get("actions", [])}
        if "send-notification" in kinds and notify_block is None:
            continue
        for action in spec.get("actions", []):
            if action["type"] == "call-webhook":
                action["block_document_id"] = str(hook_block)
            elif action["type"] == "send-notification":
                action["block_document_id"] = str(notify_block)
        if spec["name"] == BREACH_AUTOMATION:
            spec["trigger"]["within"] = sla_seconds
            spec["trigger"]["match_related"] = {
                "prefect.resource.role": "deployment",
                "prefect.resource.id": f"prefect.deployment.{deployment_id}",
            }
        specs.append(spec)
    return specs


def _automations(client: SyncPrefectClient, settings: Settings, hook_block: UUID) -> list[str]:
    """Replace paddock's automations (by name) with ones built for this stack."""
    from prefect.events.schemas.automations import AutomationCore

    notify = _notify_block(client, settings.sla_notify_block) if settings.sla_notify_block else None
    specs = automation_specs(
        deployment_id=client.read_deployment_by_name(DEPLOYMENT).id,
        sla_seconds=settings.sla_seconds,
        hook_block=hook_block,
        notify_block=notify,
    )
    names = [BREACH_AUTOMATION, NOTIFY_AUTOMATION, *(s["name"] for s in specs)]
    for name in dict.fromkeys(names):
        for old in client.read_automations_by_name(name):
            client.delete_automation(old.id)
    for spec in specs:
        client.create_automation(AutomationCore(**spec))
    return [s["name"] for s in specs]


def _wait_worker(client: SyncPrefectClient, part: Part, since: float, timeout: float) -> None:
    """Until the worker has said hello to the server after `since` (a Unix time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not part.alive():
            raise StackError(
                f"the worker exited while starting; its log {part.log} ends: {_tail(part.log)}"
            )
        for worker in client.read_workers_for_work_pool(POOL):
            beat = worker.last_heartbeat_time
            if worker.name == WORKER and beat is not None and beat.timestamp() >= since - 1:
                return
        time.sleep(0.5)
    raise StackError(f"the worker did not reach the server within {timeout:.0f} s; see {part.log}")


# ----------------------------------------------------------------------------- up / down


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
    parts, configured = _load(settings)
    alive = {name: part for name, part in parts.items() if part.alive()}
    report = Report()
    if set(alive) == set(ORDER) and configured and not redeploy:
        report.rows = [_row(alive[name], "already running") for name in ORDER]
        report.seconds = time.monotonic() - began
        return report

    ports = {"server": settings.prefect_port, "api": settings.api_port}
    for name, port in ports.items():
        if name not in alive and _port_taken(settings.stack_host, port):
            raise StackError(
                f"port {port} ({_DESCRIBE[name]}) on {settings.stack_host} is already in use "
                f"by another program; stop it or set PADDOCK_"
                f"{'PREFECT' if name == 'server' else 'API'}_PORT to a free port"
            )

    logs = _stack_dir(settings) / "logs"
    env = _env(settings, url)
    _check_prefect_database(env)
    started: dict[str, Part] = {}
    try:
        if "server" not in alive:
            say(f"starting the Prefect server on {url.prefect_ui}")
            started["server"] = _start_server(settings, url, env, logs)
            _save(settings, {**alive, **started}, configured=False)
        server = alive.get("server") or started["server"]
        _wait_http(server, f"{url.prefect_api}/health", _WAIT_SERVER)
        since = time.time()
        with _prefect(url) as client:
            _ensure_pool(client)
            if "worker" not in alive:
                say("starting the worker")
                started["worker"] = _start_worker(env, logs)
            if "api" not in alive:
                say(f"starting the paddock API on {url.api}")
                started["api"] = _start_api(settings, url, env, logs)
            _save(settings, {**alive, **started}, configured=False)
            reconfigure = "server" in started or not configured or redeploy
            if reconfigure:
                say("registering the deployments of prefect.yaml")
                report.deployments, warning = _deploy(env, logs, client)
                if warning:
                    report.warnings.append(warning)
                say("creating the SLA webhook block and the automations")
                report.automations = _automations(client, settings, _hook_block(url))
            worker = alive.get("worker") or started["worker"]
            _wait_worker(client, worker, since if "worker" in started else 0.0, _WAIT_PART)
        api = alive.get("api") or started["api"]
        _wait_http(api, f"{url.api}/openapi.json", _WAIT_PART)
    except BaseException:
        for name in reversed(ORDER):
            if name in started:
                _stop_part(started[name])
        _save(settings, alive, configured=configured)
        raise
    _save(settings, {**alive, **started}, configured=True)
    report.rows = [
        _row(started.get(name) or alive[name], "started" if name in started else "already running")
        for name in ORDER
    ]
    report.seconds = time.monotonic() - began
    return report


def _row(part: Part, state: str) -> Row:
    return Row(part=part.name, where=part.where, pid=part.pid, log=part.log, state=state)


def down() -> list[str]:
    """Stop every recorded part (worker first), and check nothing still holds the ports.

    Returns the names of the parts that were running.
    """
    settings = get_settings()
    parts, _ = _load(settings)
    stopped = [name for name in reversed(ORDER) if name in parts and parts[name].alive()]
    for name in ("worker", "api", "server"):
        if name in parts:
            _stop_part(parts[name])
    state_path(settings).unlink(missing_ok=True)
    busy = [
        p.port
        for p in parts.values()
        if p.port is not None and _wait_closed(settings.stack_host, p.port)
    ]
    if busy:
        raise StackError(
            f"port {busy[0]} is still in use after stopping the stack; another program holds it"
        )
    return stopped


def _wait_closed(host: str, port: int, timeout: float = 10.0) -> bool:
    """True if something still listens on the port after `timeout`."""
    deadline = time.monotonic() + timeout
    while _listening(host, port):
        if time.monotonic() > deadline:
            return True
        time.sleep(0.1)
    return False
