"""The stack's parts as detached process groups: start one, tell whether it still runs
(a reused pid is not mistaken for it), stop it with everything below it, and the port
checks around them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .layout import REPO

__all__ = ["Part", "spawn", "stop_part", "missing_env", "port_taken", "wait_closed", "tail"]

_STOP_GRACE = 10.0


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


def stop_part(part: Part, grace: float = _STOP_GRACE) -> None:
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


def spawn(name: str, argv: list[str], env: dict[str, str], log: Path, where: str) -> Part:
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


def missing_env(pid: int, names: tuple[str, ...]) -> list[str]:
    """Which of `names` the process was started without (none if it cannot be read)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []
    present = {entry.split(b"=", 1)[0].decode(errors="replace") for entry in environ}
    return [name for name in names if name not in present]


def port_taken(host: str, port: int) -> bool:
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


def tail(path: str, lines: int = 5) -> str:
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def wait_closed(host: str, port: int, timeout: float = 10.0) -> bool:
    """True if something still listens on the port after `timeout`."""
    deadline = time.monotonic() + timeout
    while _listening(host, port):
        if time.monotonic() > deadline:
            return True
        time.sleep(0.1)
    return False
