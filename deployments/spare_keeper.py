"""The machine's spare vLLM interpreter, imported between submissions (a stack part).

A run's own spare (`deployments.spares`) imports torch and vLLM while the run serializes
and uploads, and on a small machine it takes its cores from exactly that work. The keeper
imports one while the machine is quiet instead, and gives it to the first run that asks:
that run's deploy starts from an interpreter that is ready, and its serialize and checks
have the cores to themselves.

The protocol, on a Unix socket (mode 0600) named by ``PADDOCK_SPARE_SOCKET``: a run sends
``claim``; the keeper answers one JSON line, passing the spare's stdin along (SCM_RIGHTS)
when it has one::

    {"pid": 4242, "proc_start": 123456, "python": "/…/python", "env": {…}}   + the fd
    {"none": "no spare held now"}

The keeper then closes its own end of that stdin, so the run holds the only one: its
order makes the spare a server, and a run that ends without sending one leaves the spare
at end of input, where it exits. A keeper that stops (``paddock down``) kills the spare
it still holds; servers it gave away keep running.

The next spare is not imported at once, since the run that took the last one is about to
serialize and deploy on the same cores, but once the machine has had at least a core idle
for a few seconds, or after one SLA whatever the load (`PADDOCK_SLA_SECONDS`, five
minutes by default: a machine that is never quiet still gets one, and a run at work is
not slowed by the import). A spare that ends unused (killed, or a broken serving
environment) and a target with none to hold are looked at again one SLA later, not on
every tick. The environment is the local backend's own (`LocalBackend.spare_env`),
computed as a flow run computes it, and read again before every new spare, so a changed
serving target is followed; for a target that is not local, the keeper holds none.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deployments import spares
from deployments.processes import proc_start
from paddock.errors import PaddockError
from paddock.sockets import private_listener

__all__ = ["Keeper", "Recipe", "CpuIdle", "local_recipe", "main"]

log = logging.getLogger("paddock.spares")

_TICK_S = 0.5


@dataclass(frozen=True)
class Recipe:
    """How to start a spare the flow runs will take: the serving interpreter, the
    environment it imports with, and where it waits."""

    python: Path
    env: dict[str, str]
    cwd: Path


class CpuIdle:
    """Whether the machine has had at least a core idle on average over the last few
    seconds, from /proc/stat's counters (no /proc: never quiet, the keeper's cap decides)."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, float, float]] = deque()
        self._cores = len(os.sched_getaffinity(0))

    def sample(self) -> None:
        counters = _cpu_counters()
        if counters is None:
            return
        now = time.monotonic()
        self._samples.append((now, *counters))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()

    def quiet(self) -> bool:
        if len(self._samples) < 2:
            return False
        (t0, idle0, total0), (t1, idle1, total1) = self._samples[0], self._samples[-1]
        if t1 - t0 < self.window_s or total1 <= total0:
            return False
        return (idle1 - idle0) / (total1 - total0) * self._cores >= 1.0


def _cpu_counters() -> tuple[float, float] | None:
    """(idle, total) jiffies of all cores together."""
    try:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return fields[3] + fields[4], sum(fields[:8])  # idle + iowait; without guest time


class Keeper:
    """Holds at most one spare, gives it to the first claim, imports the next when quiet.

    ``recipe`` says how to start a spare now, or None when none should be held (a target
    that is not local, no serving environment). ``quiet_s`` and ``max_wait_s`` set when
    the next spare is started after one was given away or died."""

    def __init__(
        self,
        path: Path,
        recipe: Callable[[], Recipe | None],
        *,
        quiet_s: float = 3.0,
        max_wait_s: float = 300.0,
    ) -> None:
        self.path = path
        self.recipe = recipe
        self.max_wait_s = max_wait_s
        self.cpu = CpuIdle(quiet_s)
        self.spare: spares.Spare | None = None
        self.given: list[subprocess.Popen[bytes]] = []  # reaped as they end
        self._since: float | None = None  # waiting to start the next since; None: at once
        self._not_before = 0.0  # no look before this (monotonic), after one found nothing
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def serve(self) -> None:
        listener = private_listener(self.path)  # 0600: only this user may claim
        log.info("keeping a spare vLLM interpreter; claims at %s", self.path)
        try:
            while not self._stopping.is_set():
                self._reap()
                self.cpu.sample()
                self._replenish()
                ready, _, _ = select.select([listener], [], [], _TICK_S)
                if ready:
                    conn, _ = listener.accept()
                    with conn:
                        self._answer(conn)
        finally:
            listener.close()
            self.path.unlink(missing_ok=True)
            if self.spare is not None:
                self.spare.kill()
            log.info("stopped")

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(2.0)
        try:
            asked = conn.recv(64).strip()
        except OSError:
            return
        spare = self.spare
        if asked != b"claim":
            reply: spares.Offer = {"none": f"unknown request {asked[:20]!r}"}
        elif spare is None or not spare.alive():
            reply = {"none": "no spare held now"}
        else:
            offer: spares.Offer = {
                "pid": spare.pid,
                "proc_start": spare.proc_start,
                "python": str(spare.python),
                "env": spare.env,
            }
            try:
                socket.send_fds(conn, [json.dumps(offer).encode() + b"\n"], [spare.stdin.fileno()])
            except OSError as exc:
                log.info("a claim went away before its answer: %s", exc)
                return
            spare.stdin.close()  # the run's end is the only one now
            if spare.proc is not None:
                self.given.append(spare.proc)
            self.spare, self._since = None, time.monotonic()
            log.info("gave spare pid %d away", spare.pid)
            return
        try:
            conn.sendall(json.dumps(reply).encode() + b"\n")
        except OSError:
            pass

    def _replenish(self) -> None:
        now = time.monotonic()
        if self.spare is not None:
            if self.spare.alive():
                return
            # Killed, or the serving environment is broken: not straight back to a loop.
            log.info("spare pid %d ended unused", self.spare.pid)
            self.spare.kill()  # reaps it
            self.spare, self._since, self._not_before = None, now, now + self.max_wait_s
        if now < self._not_before:
            return
        if self._since is not None and not self.cpu.quiet() and now - self._since < self.max_wait_s:
            return
        try:
            recipe = self.recipe()
        except Exception as exc:  # a serving target that cannot be read now: try later
            log.warning("cannot tell how to start a spare (will try again): %s", exc)
            recipe = None
        if recipe is None:  # nothing to hold for now: look again in a while, not every tick
            self._since, self._not_before = now, now + self.max_wait_s
            return
        proc = spares.spawn(recipe.python, recipe.env, recipe.cwd)
        assert proc.stdin is not None  # started with a pipe
        self.spare = spares.Spare(
            proc.pid,
            proc.stdin,
            recipe.python,
            dict(recipe.env),
            proc=proc,
            proc_start=proc_start(proc.pid),
        )
        log.info("spare pid %d importing vLLM", proc.pid)

    def _reap(self) -> None:
        self.given = [p for p in self.given if p.poll() is None]


def local_recipe() -> Recipe | None:
    """A spare for the configured serving target, if it is local and has its serving
    environment; the environment as the target's backend computes it in a flow run."""
    from deployments.local import LocalBackend
    from paddock.serving import current_backend

    backend = current_backend()
    if not isinstance(backend, LocalBackend) or not backend.python.exists():
        return None
    return Recipe(backend.python, backend.spare_env(), backend.log_dir)


def main() -> int:
    from paddock.config import settings_or_exit

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    settings = settings_or_exit()
    path = os.environ.get(spares.SOCKET_VAR)
    if not path:
        log.error("%s is not set: nowhere to take claims", spares.SOCKET_VAR)
        return 2
    keeper = Keeper(Path(path), local_recipe, max_wait_s=float(settings.sla_seconds))
    signal.signal(signal.SIGTERM, lambda *_: keeper.stop())
    signal.signal(signal.SIGINT, lambda *_: keeper.stop())
    try:
        keeper.serve()
    except PaddockError as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
