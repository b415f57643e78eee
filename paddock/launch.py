"""The `paddock` work pool's flow-run command: start the run as a fork of the stack's
launcher (`paddock.launcher`), whose interpreter has already imported Prefect's engine
and the stages' libraries, and stand in for that fork until it ends.

Prefect's process worker watches this process as if it were the engine: the run's exit
code becomes this process's, and a signal the worker sends here (a cancelled run) is
passed on to the run. Where no launcher can take the run — the variable unset (a worker
the stack did not start), its socket gone, or a run whose environment the launcher
refuses to stand for — this process becomes ``python -m prefect.engine`` itself, and the
run starts exactly as it would have without the launcher.

Standard library only, and nothing of paddock imported: this process starts in tens of
milliseconds, where the engine it replaces took two seconds to import.
"""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import struct
import sys
import time
from typing import Any, NoReturn

__all__ = ["SOCKET_VAR", "ENGINE_MODULE", "main", "request_bytes", "kill_quietly"]

# Where the launcher takes runs; `paddock up` sets it in the worker's environment.
SOCKET_VAR = "PADDOCK_LAUNCHER_SOCKET"
ENGINE_MODULE = "prefect.engine"  # what this command stands in for
STREAMS = [0, 1, 2]  # the run writes where the worker reads, and reads what it gives
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_CONNECT_TIMEOUT_S = 5.0


def request_bytes(env: dict[str, str], cwd: str, argv: list[str]) -> bytes:
    """A run's request: its length, then the environment, working directory and engine
    arguments it would have started with, as JSON."""
    payload = json.dumps({"env": env, "cwd": cwd, "argv": argv}).encode()
    return struct.pack("!I", len(payload)) + payload


def main() -> NoReturn:
    path = os.environ.get(SOCKET_VAR)
    if path:
        try:
            sock = _connect(path)
        except OSError as exc:
            _say(f"no launcher at {path} ({exc.strerror or exc}); starting the engine here")
        else:
            _stand_in(sock)  # returns only when the launcher did not take the run
    _engine_here()


def _engine_here() -> NoReturn:
    os.execv(sys.executable, [sys.executable, "-m", ENGINE_MODULE, *sys.argv[1:]])


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(_CONNECT_TIMEOUT_S)
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def _stand_in(sock: socket.socket) -> None:
    """Hand the run over, then mirror it: signals in, exit code out."""
    pending: list[int] = []
    child: list[int] = []  # the run's pid, once the launcher has said it

    def forward(signum: int, _frame: Any) -> None:
        if child:
            kill_quietly(child[0], signum)
        else:
            pending.append(signum)

    for signum in _FORWARDED:
        signal.signal(signum, forward)
    data = request_bytes(dict(os.environ), os.getcwd(), sys.argv[1:])
    with sock:
        try:
            sent = sock.sendmsg(
                [data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", STREAMS))]
            )
            sock.sendall(data[sent:])
            sock.settimeout(None)  # the run takes as long as it takes
            answers = sock.makefile("rb")
            first = _answer(answers)
        except OSError as exc:
            first = {"refused": f"the launcher did not answer ({exc})"}
        if "pid" not in first:
            for forwarded in _FORWARDED:
                signal.signal(forwarded, signal.SIG_DFL)
            _say(f"{first.get('refused', 'the launcher did not answer')}; starting the engine here")
            if pending:  # asked to stop before anything started: stop
                os.kill(os.getpid(), pending[0])
            return
        child.append(int(first["pid"]))
        for early in pending:
            kill_quietly(child[0], early)
        last = _answer(answers)
    if "exit" not in last:
        _outlive_launcher(child[0])
    _exit_as(int(last["exit"]))


def _answer(answers: Any) -> dict[str, Any]:
    line = answers.readline()
    if not line:
        return {}
    answer: dict[str, Any] = json.loads(line)
    return answer


def _outlive_launcher(pid: int) -> NoReturn:
    """The launcher stopped mid-run: the run goes on without it (it records its own state
    in Prefect); wait for it to end, though its exit code is lost."""
    _say("the launcher stopped while the run was in progress; waiting for the run to end")
    while _alive(pid):
        time.sleep(0.5)
    _say("the run ended; its exit code is unknown (its state in Prefect stands)")
    raise SystemExit(1)


def _exit_as(code: int) -> NoReturn:
    """Exit as the run did: with its code, or killed by the same signal."""
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        code = 128 - code
    raise SystemExit(code)


def kill_quietly(pid: int, signum: int) -> None:
    """Signal a process that may have ended already."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    """Running, not merely unreaped: a run orphaned by its launcher may never be reaped
    where the machine's first process does not reap adopted children."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _say(message: str) -> None:
    print(f"paddock.launch: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
