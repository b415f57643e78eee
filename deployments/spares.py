"""Spare vLLM interpreters: started ahead of a deploy, handed its command line later.

A local server's start is mostly Python importing torch and vLLM, which needs nothing
from the model. So once a submission has passed its static checks the pipeline starts a
spare interpreter (`paddock_serving.spare`, in the serving environment) that does those
imports while the bundle is serialized and uploaded, and the deploy stage hands it the
server's command line instead of starting a fresh interpreter.

A spare is a head start, never a dependency: a deploy that finds none (a retry, another
process, a spare that died, an environment that changed) starts its server the ordinary
way. A spare is handed over only when everything it read while importing is what the
server would have been started with: its interpreter, and its environment but for the
keys read once the server runs (HOME, the XDG directories, the spec's own). One never
taken is killed when its run ends; if the process that started it dies first, its stdin
ends and it exits by itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LATE_KEYS", "start", "take", "hand_over", "discard"]

# Read by a server once it runs, not while it imports: these may differ.
LATE_KEYS = frozenset({"HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"})
_MODULE = "paddock_serving.spare"


@dataclass
class _Spare:
    proc: subprocess.Popen[bytes]
    python: Path
    env: dict[str, str]


_lock = threading.Lock()
_spares: dict[str, _Spare] = {}


def start(key: str, python: Path, env: dict[str, str], cwd: Path) -> None:
    """Start a spare for ``key`` (a submission), unless one is already waiting."""
    with _lock:
        waiting = _spares.get(key)
        if waiting is not None and waiting.proc.poll() is None:
            return
    proc = subprocess.Popen(
        [str(python), "-m", _MODULE],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=str(cwd),
        start_new_session=True,  # its own process group, as the server it becomes
    )
    with _lock:
        old = _spares.pop(key, None)
        _spares[key] = _Spare(proc, Path(python), dict(env))
    if old is not None:
        _kill(old.proc)


def take(
    key: str, python: Path, env: dict[str, str], late: Collection[str] = ()
) -> subprocess.Popen[bytes] | None:
    """The spare started for ``key``, if it is alive and was started as this server
    would be (``late``: more keys read only once it runs); None otherwise."""
    with _lock:
        spare = _spares.pop(key, None)
    if spare is None:
        return None
    skip = LATE_KEYS | set(late)
    if (
        spare.proc.poll() is not None
        or spare.python != Path(python)
        or _early(spare.env, skip) != _early(env, skip)
    ):
        _kill(spare.proc)
        return None
    return spare.proc


def hand_over(
    proc: subprocess.Popen[bytes], argv: list[str], env: dict[str, str], cwd: Path, log: Path
) -> None:
    """Make the spare the server ``argv`` describes; raises OSError if it has gone."""
    order = {"argv": argv, "env": env, "cwd": str(cwd), "log": str(log)}
    assert proc.stdin is not None  # started with a pipe
    try:
        proc.stdin.write(json.dumps(order).encode() + b"\n")
        proc.stdin.close()
    except OSError:
        _kill(proc)
        raise


def discard(key: str) -> None:
    """Kill the spare started for ``key`` if nobody took it."""
    with _lock:
        spare = _spares.pop(key, None)
    if spare is not None:
        _kill(spare.proc)


def _early(env: dict[str, str], skip: Collection[str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in skip}


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """A spare holds nothing but imports: killed outright, with its group, and reaped."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        if proc.stdin is not None:
            proc.stdin.close()
    except OSError:
        pass
    proc.wait()
