"""The API's nudge to the stack's worker: a hint that never fails the caller."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from paddock.nudge import SOCKET_VAR, nudge
from paddock.sockets import private_listener


def test_a_listening_worker_is_nudged(tmp_path: Path) -> None:
    listener = private_listener(tmp_path / "worker.sock")
    with listener:
        listener.settimeout(5)
        assert nudge(str(tmp_path / "worker.sock")) is True
        conn, _ = listener.accept()
        conn.close()


def test_no_worker_is_no_nudge_and_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SOCKET_VAR, raising=False)
    assert nudge() is False  # no stack: nothing to tell
    assert nudge(str(tmp_path / "absent.sock")) is False
    stale = tmp_path / "stale.sock"  # a socket a killed worker left behind
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(stale))
    assert nudge(str(stale)) is False
    monkeypatch.setenv(SOCKET_VAR, str(stale))
    assert nudge() is False
