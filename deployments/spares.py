"""Spare vLLM interpreters: started ahead of a deploy, handed its command line later.

A local server's start is mostly Python importing torch and vLLM, which needs nothing
from the model. So once a submission has passed its static checks the pipeline gets a
spare interpreter (`paddock_serving.spare`, in the serving environment) that has done or
is doing those imports, and the deploy stage hands it the server's command line instead
of starting a fresh interpreter. A spare comes from one of two places:

- the machine's keeper (`deployments.spare_keeper`, a part of the stack `paddock up`
  starts), which imports one while the machine is quiet and gives it to the first run
  that asks: its imports cost that run nothing;
- otherwise the run starts its own, which imports while the bundle is serialized and
  uploaded (the embedded mode, or a keeper with none ready).

Either way the run holds the spare's stdin: the order goes there, and when the run ends
without sending one (or dies) the spare reads end of input and exits by itself.

A spare is a head start, never a dependency: a deploy that finds none (a retry, another
process, a spare that died, an environment that changed) starts its server the ordinary
way. A spare is handed over only when everything it read while importing is what the
server would have been started with: its interpreter, and its environment but for the
keys read once the server runs (HOME, the XDG directories, the spec's own). One never
taken is killed when its run ends.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypedDict

from deployments.processes import proc_stat

__all__ = [
    "LATE_KEYS",
    "SOCKET_VAR",
    "Offer",
    "Spare",
    "spawn",
    "start",
    "claim",
    "take",
    "hand_over",
    "discard",
]

log = logging.getLogger(__name__)

# Read by a server once it runs, not while it imports: these may differ.
LATE_KEYS = frozenset({"HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"})
# Where the stack's keeper listens (set by `paddock up` for its parts; unset: no keeper).
SOCKET_VAR = "PADDOCK_SPARE_SOCKET"
_MODULE = "paddock_serving.spare"
_CLAIM_TIMEOUT_S = 2.0


class Offer(TypedDict, total=False):
    """The keeper's answer to a claim: the spare it gives (its stdin comes alongside), or
    why it has none."""

    pid: int
    proc_start: int | None
    python: str
    env: dict[str, str]
    none: str


@dataclass
class Spare:
    """A spare interpreter as its holder sees it: the process, and the pipe to its stdin.

    ``proc`` is set when this process started it (and reaps it); a spare from the keeper
    is the keeper's child, known by its pid and the kernel's start time of that pid."""

    pid: int
    stdin: IO[bytes]
    python: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    proc_start: int | None = None

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        state, started = proc_stat(self.pid)
        return state not in (None, "Z", "X") and started == self.proc_start

    def kill(self) -> None:
        """A spare holds nothing but imports: killed outright, with its group."""
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.stdin.close()
        except OSError:
            pass
        if self.proc is not None:
            self.proc.wait()


_lock = threading.Lock()
_spares: dict[str, Spare] = {}


def spawn(python: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    """A new spare interpreter, importing from now on, in a process group of its own (as
    the server it becomes)."""
    return subprocess.Popen(
        [str(python), "-m", _MODULE],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=str(cwd),
        start_new_session=True,
    )


def start(key: str, python: Path, env: dict[str, str], cwd: Path) -> None:
    """Start a spare for ``key`` (a submission), unless one is already waiting."""
    with _lock:
        waiting = _spares.get(key)
        if waiting is not None and waiting.alive():
            return
    proc = spawn(python, env, cwd)
    assert proc.stdin is not None  # started with a pipe
    _keep(key, Spare(proc.pid, proc.stdin, Path(python), dict(env), proc=proc))


def claim(key: str, python: Path, env: dict[str, str]) -> bool:
    """Take the machine keeper's spare and hold it for ``key``, if there is a keeper, it
    has one, and that one was started as ours would be; False otherwise (start one).

    A spare the keeper started differently is let go at once (it exits), with a warning
    naming the keys that differ: the keeper runs with another environment than the flow
    runs, and every claim would waste its spare until the stack is started again.
    """
    path = os.environ.get(SOCKET_VAR)
    if not path or not Path(path).exists():
        return False
    try:
        offer, fd = _ask(path)
    except (OSError, ValueError) as exc:
        log.info("no spare from the keeper at %s: %s", path, exc)
        return False
    if fd is None:
        log.info("the keeper has no spare ready: %s", offer.get("none", "?"))
        return False
    spare = Spare(
        pid=offer["pid"],
        stdin=os.fdopen(fd, "wb"),
        python=Path(offer["python"]),
        env=offer["env"],
        proc_start=offer.get("proc_start"),
    )
    differs = _differs(spare, python, env, ())
    if differs:
        log.warning(
            "the keeper's spare was started differently (%s); starting one for this run",
            ", ".join(differs),
        )
        spare.kill()
        return False
    _keep(key, spare)
    return True


def take(key: str, python: Path, env: dict[str, str], late: Collection[str] = ()) -> Spare | None:
    """The spare started for ``key``, if it is alive and was started as this server
    would be (``late``: more keys read only once it runs); None otherwise."""
    with _lock:
        spare = _spares.pop(key, None)
    if spare is None:
        return None
    if not spare.alive() or _differs(spare, python, env, late):
        spare.kill()
        return None
    return spare


def hand_over(spare: Spare, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
    """Make the spare the server ``argv`` describes; raises OSError if it has gone."""
    order = {"argv": argv, "env": env, "cwd": str(cwd), "log": str(log)}
    try:
        spare.stdin.write(json.dumps(order).encode() + b"\n")
        spare.stdin.close()
    except OSError:
        spare.kill()
        raise


def discard(key: str) -> None:
    """Kill the spare held for ``key`` if nobody took it."""
    with _lock:
        spare = _spares.pop(key, None)
    if spare is not None:
        spare.kill()


def _keep(key: str, spare: Spare) -> None:
    with _lock:
        old = _spares.pop(key, None)
        _spares[key] = spare
    if old is not None:
        old.kill()


def _ask(path: str) -> tuple[Offer, int | None]:
    """The keeper's answer to a claim: its offer, and the spare's stdin if it gave one."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(_CLAIM_TIMEOUT_S)
        sock.connect(path)
        sock.sendall(b"claim\n")
        data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, 1)
        for extra in fds[1:]:
            os.close(extra)
        while not data.endswith(b"\n"):
            more = sock.recv(1 << 16)
            if not more:
                break
            data += more
    fd = fds[0] if fds else None
    if fd is not None:
        os.set_inheritable(fd, False)  # ours alone: no server or stage process inherits it
    try:
        offer: Offer = json.loads(data)
    except ValueError:
        if fd is not None:
            os.close(fd)
        raise
    return offer, fd


def _differs(
    spare: Spare, python: Path, env: Mapping[str, str], late: Collection[str]
) -> list[str]:
    """What tells the spare apart from the server to be: the interpreter, or the names
    (never the values) of the environment keys read while importing that differ."""
    if spare.python != Path(python):
        return [f"interpreter {spare.python}"]
    skip = LATE_KEYS | set(late)
    keys = (set(spare.env) | set(env)) - skip
    return sorted(k for k in keys if spare.env.get(k) != env.get(k))
