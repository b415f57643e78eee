"""The launcher: one interpreter that has imported Prefect's engine and the libraries the
stages use, forked for each flow run of the `paddock` pool.

A flow run started as ``python -m prefect.engine`` spends its first seconds importing
Prefect, SQLAlchemy, torch, tensorizer and transformers — the same modules for every
run, on the submission's clock. `paddock up` starts this process once; the pool's
command (`paddock.launch`) sends it the run's environment, working directory and
standard streams over a Unix socket (mode 0600, in PADDOCK_HOME/stack), and it forks a
child that takes them on and runs the engine as ``python -m prefect.engine`` would. The
child's pid and, later, its exit code go back to the command, which the worker watches.

A fork shares what the launcher imported, so nothing it shares may be stale:

- paddock's own packages are never kept in a child: it imports them afresh from the
  repository, so an edited flow runs as edited;
- Prefect's settings are read again from the run's environment;
- an environment that differs from the launcher's in any other key (one a library may
  have read while importing) is refused, naming the keys, never their values: the run
  then starts the usual way.

The launcher stays single-threaded (a select loop), so a fork never copies a lock some
other thread held. A child whose command disappears (the worker killed it) is stopped.
"""

from __future__ import annotations

import gc
import importlib
import json
import logging
import os
import runpy
import selectors
import signal
import socket
import struct
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paddock.errors import PaddockError
from paddock.launch import ENGINE_MODULE, SOCKET_VAR, kill_quietly
from paddock.sockets import private_listener

__all__ = ["PRELOAD", "OWN_PACKAGES", "Launcher", "Run", "differs", "main"]

log = logging.getLogger("paddock.launcher")

# What every flow run of the pool imports: Prefect's engine and what it imports once it
# runs, then the stages' libraries (the value scan and serialize, the runtime checks, the
# database layer, the hub, the store, the chat templates). A module missing here is only
# imported by the child, as without the launcher.
PRELOAD = (
    "prefect.engine",
    "prefect.flow_engine",
    "prefect.deployments.steps",
    "torch",
    "safetensors.torch",
    "tensorizer",
    "transformers",
    "transformers.models.auto.modeling_auto",
    "transformers.models.auto.tokenization_auto",
    "transformers.modeling_utils",  # what building any model imports: 1.7 s here
    "transformers.generation.utils",
    "sqlalchemy",
    "sqlmodel",
    "httpx",
    "boto3",
    "huggingface_hub",
    "jinja2",
)
# The repository's own packages: imported by each run afresh, never shared.
OWN_PACKAGES = frozenset({"paddock", "flows", "tasks", "deployments", "blocks"})
# Prefect settings are read again in the child, except those read while importing.
_REREAD = "PREFECT_"
_READ_AT_IMPORT = ("PREFECT_HOME", "PREFECT_PROFILES_PATH", "PREFECT_LOGGING_")
_MAX_REQUEST = 1 << 22
_REQUEST_TIMEOUT_S = 5.0
_KILL_AFTER_S = 10.0  # a child whose command vanished: SIGTERM, then this long to end


@dataclass
class Run:
    """What a flow-run command asked for: the environment, working directory and engine
    arguments it would have started with, and its standard streams."""

    env: dict[str, str]
    cwd: str
    argv: list[str]
    streams: list[int]


@dataclass
class _Child:
    conn: socket.socket
    flow_run: str
    orphaned_at: float | None = None  # when its command disappeared


def differs(own: Mapping[str, str], theirs: Mapping[str, str]) -> list[str]:
    """The environment keys (names only) a child could not take on after the fork: any
    that differ from the launcher's, except the Prefect settings it reads again."""
    keys = set(own) | set(theirs)
    return sorted(
        k
        for k in keys
        if own.get(k) != theirs.get(k)
        and not (k.startswith(_REREAD) and not k.startswith(_READ_AT_IMPORT))
    )


def preload(modules: tuple[str, ...] = PRELOAD) -> float:
    """Import `modules`, then freeze what they made out of the garbage collector's reach.

    A fork shares those objects' pages until something writes to them, and a full
    collection in a child writes to every one it visits: half a million objects after the
    imports, 0.33–0.38 s of each run's CPU per full collection here, none once frozen.
    """
    began = time.perf_counter()
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a library that will not import is the child's to meet
            log.warning("could not import %s ahead (%s); each run imports it", name, exc)
    gc.collect()
    gc.freeze()
    return time.perf_counter() - began


@dataclass
class Launcher:
    """Takes runs at ``path`` and forks one child per run; see the module docstring."""

    path: Path
    engine: str = ENGINE_MODULE  # the module each child runs as __main__
    modules: tuple[str, ...] = PRELOAD
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    children: dict[int, _Child] = field(default_factory=dict)
    _stopping: bool = False

    def stop(self) -> None:
        self._stopping = True

    def serve(self) -> Run | None:
        """Until stopped; returns None. In a forked child it returns that child's run."""
        me = os.getpid()
        listener = private_listener(self.path, 16)  # before the imports: `up` waits less
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select below
        selector = selectors.DefaultSelector()
        try:
            log.info("importing %d modules ahead of the runs", len(self.modules))
            log.info("imported in %.1f s; taking runs at %s", preload(self.modules), self.path)
            selector.register(listener, selectors.EVENT_READ)
            selector.register(wake_r, selectors.EVENT_READ)
            while not self._stopping:
                for key, _ in selector.select(timeout=1.0):
                    if key.fileobj is listener:
                        run = self._take(listener, selector)
                        if run is not None:  # the child
                            return run
                    elif key.fileobj == wake_r:
                        _drain(wake_r)
                    else:
                        self._orphaned(key.fileobj, selector)  # type: ignore[arg-type]
                self._reap(selector)
                self._kill_late()
            return None
        finally:
            if os.getpid() == me:
                listener.close()
                self.path.unlink(missing_ok=True)
                log.info("stopped; %d run(s) still going", len(self.children))
            else:  # the child keeps nothing of the launcher's
                listener.close()
                for child in self.children.values():
                    child.conn.close()
                signal.set_wakeup_fd(-1)
            selector.close()
            os.close(wake_r)
            os.close(wake_w)

    def _take(self, listener: socket.socket, selector: selectors.BaseSelector) -> Run | None:
        conn, _ = listener.accept()
        try:
            run = _receive(conn)
        except (OSError, ValueError) as exc:
            log.warning("a malformed request (%s); dropped", exc)
            conn.close()
            return None
        flow_run = run.env.get("PREFECT__FLOW_RUN_ID", "?")
        refused = differs(self.env, run.env)
        if refused:
            _close(run.streams)
            reason = (
                f"the run's environment differs from the launcher's in {', '.join(refused[:5])}"
                f"{' …' if len(refused) > 5 else ''} (keys a library may read while importing): "
                "set them where `paddock up` runs rather than in the pool's job variables, "
                "or restart the stack after changing them"
            )
            log.warning("flow run %s not forked: %s", flow_run, reason)
            _send(conn, {"refused": reason})
            conn.close()
            return None
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # nothing of the launcher's written twice
        try:
            pid = os.fork()
        except OSError as exc:  # out of memory or processes: the run starts on its own
            _close(run.streams)
            log.warning("flow run %s not forked: %s", flow_run, exc)
            _send(conn, {"refused": f"the launcher could not fork ({exc.strerror or exc})"})
            conn.close()
            return None
        if pid == 0:
            conn.close()
            return run
        _close(run.streams)
        log.info("flow run %s started as pid %d", flow_run, pid)
        self.children[pid] = _Child(conn, flow_run)
        selector.register(conn, selectors.EVENT_READ)
        _send(conn, {"pid": pid})
        return None

    def _orphaned(self, conn: socket.socket, selector: selectors.BaseSelector) -> None:
        """The command of a run went away (it sends nothing after its request): stop the
        run it stood for, as the worker meant to."""
        selector.unregister(conn)
        for pid, child in self.children.items():
            if child.conn is conn:
                log.warning("flow run %s lost its command; stopping pid %d", child.flow_run, pid)
                child.orphaned_at = time.monotonic()
                kill_quietly(pid, signal.SIGTERM)

    def _kill_late(self) -> None:
        now = time.monotonic()
        for pid, child in self.children.items():
            if child.orphaned_at is not None and now - child.orphaned_at > _KILL_AFTER_S:
                kill_quietly(pid, signal.SIGKILL)

    def _reap(self, selector: selectors.BaseSelector) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            log.info("flow run %s (pid %d) exited with %d", child.flow_run, pid, code)
            if child.orphaned_at is None:
                selector.unregister(child.conn)
                _send(child.conn, {"exit": code})
            child.conn.close()


def run_engine(run: Run, engine: str) -> None:
    """In the forked child: become the process ``python -m prefect.engine`` would have
    been — its streams, environment, directory and arguments — and run the engine."""
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in enumerate(run.streams):
        os.dup2(fd, target)
    _close(run.streams)
    os.environ.clear()
    os.environ.update(run.env)
    os.chdir(run.cwd)
    sys.path[0] = run.cwd  # what `-m` puts first
    for name in [m for m in sys.modules if m.split(".", 1)[0] in OWN_PACKAGES]:
        del sys.modules[name]
    for handler in list(log.handlers):
        log.removeHandler(handler)

    settings = sys.modules.get("prefect.context")
    if settings is not None:  # read at import from the launcher's environment: again
        settings.refresh_global_settings_context()
    sys.argv = ["-m", *run.argv]
    # The engine module was imported ahead; running it as __main__ executes its code a
    # second time, which is what `-m` does too (its imports are what was saved).
    warnings.filterwarnings("ignore", f"'{engine}' found in sys.modules", RuntimeWarning)
    runpy.run_module(engine, run_name="__main__", alter_sys=True)


def _receive(conn: socket.socket) -> Run:
    conn.settimeout(_REQUEST_TIMEOUT_S)
    head, streams = _recv_head(conn)
    try:
        (size,) = struct.unpack("!I", head[:4])
        if size > _MAX_REQUEST or len(streams) != 3:
            raise ValueError(f"{size} bytes, {len(streams)} streams")
        body = head[4:]
        while len(body) < size:
            more = conn.recv(size - len(body))
            if not more:
                raise ValueError("the request ended early")
            body += more
        data: dict[str, Any] = json.loads(body)
        env = {str(k): str(v) for k, v in dict(data["env"]).items()}
        run = Run(
            env=env, cwd=str(data["cwd"]), argv=[str(a) for a in data["argv"]], streams=streams
        )
    except (ValueError, KeyError, TypeError, struct.error):
        _close(streams)
        raise
    conn.settimeout(None)
    return run


def _recv_head(conn: socket.socket) -> tuple[bytes, list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
    if len(data) < 4:
        _close(fds)
        raise ValueError("no request")
    return data, list(fds)


def _send(conn: socket.socket, answer: dict[str, Any]) -> None:
    try:
        conn.sendall(json.dumps(answer).encode() + b"\n")
    except OSError:
        pass  # its command is gone; the reaper or the orphan check deals with the run


def _close(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def main(engine: str = ENGINE_MODULE, modules: tuple[str, ...] = PRELOAD) -> int:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    path = os.environ.get(SOCKET_VAR)
    if not path:
        log.error("%s is not set: nowhere to take runs", SOCKET_VAR)
        return 2
    launcher = Launcher(Path(path), engine=engine, modules=modules)
    signal.signal(signal.SIGTERM, lambda *_: launcher.stop())
    signal.signal(signal.SIGINT, lambda *_: launcher.stop())
    try:
        run = launcher.serve()
    except PaddockError as exc:
        log.error("%s", exc)
        return 2
    if run is not None:  # a forked child: the engine's exit is this process's
        run_engine(run, launcher.engine)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
