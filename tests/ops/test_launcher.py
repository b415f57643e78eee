"""The launcher forks flow runs from an interpreter that imported their libraries ahead,
and the pool's command (`paddock.launch`) stands in for each fork towards the worker.

A real launcher process on a real socket, with a small module in place of Prefect's
engine (`tests/utils/launched.py`) that reports what the fork was handed; `test_stack`
runs the real engine through it, submissions and a cancelled run included.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from paddock.errors import PaddockError
from paddock.launch import SOCKET_VAR
from paddock.launcher import differs
from paddock.sockets import private_listener

ROOT = Path(__file__).resolve().parents[2]
SERVE = (
    "from paddock.launcher import main; "
    "raise SystemExit(main(engine='tests.utils.launched', modules=('xml.dom.minidom',)))"
)


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    log: Path
    flow_run: str = ""  # the last command's

    def command(self, *args: str, env: dict[str, str] | None = None, **kw: Any) -> Any:
        """The pool's command as the worker starts it, for a flow run of its own."""
        self.flow_run = str(uuid.uuid4())
        run_env = {**(env or self.env), "PREFECT__FLOW_RUN_ID": self.flow_run}
        argv = [sys.executable, "-m", "paddock.launch", *args]
        return subprocess.Popen(argv, env=run_env, cwd=ROOT, **kw)

    def said(self, flow_run: str) -> str:
        """The launcher's log lines about one flow run."""
        lines = self.log.read_text().splitlines()
        return "\n".join(line for line in lines if flow_run in line)


def _start(where: Path) -> Running:
    """A launcher taking runs at `where`/launcher.sock, once its imports are done."""
    env = {**os.environ, SOCKET_VAR: str(where / "launcher.sock")}
    log = where / "launcher.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVE], env=env, cwd=ROOT, stdout=out, stderr=out
        )
    deadline = time.monotonic() + 60
    while "taking runs" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return Running(proc, env, log)


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = _start(tmp_path_factory.mktemp("launcher"))
    yield running
    running.proc.terminate()
    assert running.proc.wait(timeout=30) == 0
    assert not Path(running.env[SOCKET_VAR]).exists()


def _report(out: bytes) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(out.decode().splitlines()[0])
    return report


def _gone(pid: int, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _wait_for(path: Path) -> int:
    deadline = time.monotonic() + 30
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.05)
    return int(path.read_text())


def test_a_run_is_a_fork_with_the_commands_streams_environment_directory_and_exit_code(
    launcher: Running,
) -> None:
    command = launcher.command("exit", "7", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out, _ = command.communicate(b"the worker's input", timeout=60)
    assert command.returncode == 7
    report = _report(out)
    assert report["ppid"] == launcher.proc.pid  # forked by the launcher, not started anew
    assert report["pid"] != command.pid
    assert report["preloaded"]  # what the launcher imported, the run did not import again
    assert report["frozen"] > 0  # and no collection of the run's writes to those pages
    assert report["paddock"] == []  # paddock's own modules are never shared with a run
    assert report["argv"] == ["exit", "7"] and report["cwd"] == str(ROOT)
    assert report["stdin"] == "the worker's input"
    assert report["flow_run"] in launcher.log.read_text()


def test_a_signal_to_the_command_reaches_the_run(launcher: Running, tmp_path: Path) -> None:
    command = launcher.command("wait", str(tmp_path / "pid"), stdout=subprocess.DEVNULL)
    run = _wait_for(tmp_path / "pid")
    command.send_signal(signal.SIGTERM)  # what the worker sends a cancelled run
    assert command.wait(timeout=30) == -signal.SIGTERM  # the run's end, mirrored
    assert _gone(run)
    said = launcher.said(launcher.flow_run)
    assert "exited with -15" in said and "lost its command" not in said  # passed on


def test_a_run_whose_command_was_killed_is_stopped(launcher: Running, tmp_path: Path) -> None:
    command = launcher.command("wait", str(tmp_path / "pid"), stdout=subprocess.DEVNULL)
    run = _wait_for(tmp_path / "pid")
    command.kill()  # nothing can be forwarded: the launcher sees the command vanish
    command.wait(timeout=10)
    assert _gone(run, timeout=5)  # asked to stop at once, not left to the later SIGKILL
    assert "lost its command" in launcher.said(launcher.flow_run)


def test_an_environment_the_launcher_cannot_stand_for_starts_the_engine_the_usual_way(
    launcher: Running,
) -> None:
    env = {**launcher.env, "PADDOCK_TEST_TOKEN": "never-printed-value"}
    command = launcher.command("exit", "7", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = command.communicate(timeout=60)
    said = err.decode()
    assert "differs from the launcher's in PADDOCK_TEST_TOKEN" in said
    assert "starting the engine here" in said
    assert "never-printed-value" not in said + launcher.log.read_text()
    # This process became `python -m prefect.engine exit 7`, which wants a flow run id.
    assert command.returncode == 1 and "Invalid flow run id" in said + out.decode()


def test_without_a_launcher_the_command_is_the_engine(launcher: Running, tmp_path: Path) -> None:
    env = {**launcher.env, SOCKET_VAR: str(tmp_path / "nobody.sock")}
    command = launcher.command("exit", "7", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = command.communicate(timeout=60)
    assert "no launcher at" in err.decode()
    assert command.returncode == 1 and "Invalid flow run id" in (err + out).decode()


def test_a_malformed_request_is_dropped_and_the_next_run_starts(launcher: Running) -> None:
    for junk in (b"", b"\x00\x00", b"\xff\xff\xff\xff{", b"\x00\x00\x00\x02{}"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(launcher.env[SOCKET_VAR])
            sock.sendall(junk)
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(100) == b""  # closed without an answer
    command = launcher.command("exit", "0", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    out, _ = command.communicate(timeout=60)
    assert command.returncode == 0 and _report(out)["ppid"] == launcher.proc.pid


def test_only_prefect_settings_may_differ_from_the_launchers_environment() -> None:
    own = {"PATH": "/bin", "PREFECT_API_URL": "http://a", "PREFECT_LOGGING_LEVEL": "INFO"}
    assert differs(own, {**own, "PREFECT_API_URL": "http://b", "PREFECT__FLOW_RUN_ID": "x"}) == []
    assert differs(own, {**own, "PATH": "/usr/bin"}) == ["PATH"]
    assert differs(own, {**own, "PREFECT_LOGGING_LEVEL": "DEBUG"}) == ["PREFECT_LOGGING_LEVEL"]
    assert differs(own, {**own, "PREFECT_HOME": "/elsewhere"}) == ["PREFECT_HOME"]
    assert differs(own, {"PREFECT_API_URL": "http://a", "PREFECT_LOGGING_LEVEL": "INFO"}) == [
        "PATH"
    ]


def test_the_socket_is_this_users_alone(launcher: Running) -> None:
    assert stat.S_IMODE(os.stat(launcher.env[SOCKET_VAR]).st_mode) == 0o600


def test_a_socket_path_too_long_for_unix_is_one_sentence_naming_the_setting(
    tmp_path: Path,
) -> None:
    deep = tmp_path / ("d" * 120) / "launcher.sock"
    with pytest.raises(PaddockError, match="PADDOCK_HOME") as caught:
        private_listener(deep)
    assert str(deep) in str(caught.value)
    done = subprocess.run(
        [sys.executable, "-c", SERVE],
        env={**os.environ, SOCKET_VAR: str(deep)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "set PADDOCK_HOME" in done.stderr


def test_a_run_outlives_a_launcher_that_stops_and_its_command_waits_for_it(
    tmp_path: Path,
) -> None:
    running = _start(tmp_path)
    command = running.command("wait", str(tmp_path / "pid"), stderr=subprocess.PIPE)
    run = _wait_for(tmp_path / "pid")
    running.proc.kill()  # mid-run: the run is not the launcher's to take down with it
    running.proc.wait(timeout=10)
    time.sleep(0.5)
    assert command.poll() is None and not _gone(run, timeout=0.5)  # both go on
    os.kill(run, signal.SIGTERM)
    _, err = command.communicate(timeout=30)
    assert command.returncode == 1  # its end is known, its code is not
    assert "the launcher stopped while the run was in progress" in err.decode()


def test_a_worker_started_without_the_launchers_variable_is_named(tmp_path: Path) -> None:
    """What `up` checks of a worker an older `up` left running (its runs would start
    without the launcher and the keeper, silently)."""
    from paddock.stack.processes import missing_env

    names = (SOCKET_VAR, "PADDOCK_SPARE_SOCKET")
    older = {k: v for k, v in os.environ.items() if k not in names}
    with subprocess.Popen(["sleep", "30"], env=older) as proc:
        _execed(proc.pid)
        assert missing_env(proc.pid, names) == list(names)
        proc.kill()
    newer = {**older, SOCKET_VAR: str(tmp_path / "l.sock"), "PADDOCK_SPARE_SOCKET": "s"}
    with subprocess.Popen(["sleep", "30"], env=newer) as proc:
        _execed(proc.pid)
        assert missing_env(proc.pid, names) == []
        proc.kill()
    assert missing_env(2**22 + 7, names) == []  # no such process: nothing to say


def _execed(pid: int) -> None:
    """Until the child runs `sleep`: before its exec, /proc shows the parent's environment."""
    deadline = time.monotonic() + 10
    while not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep\0"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
