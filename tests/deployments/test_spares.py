"""Spare vLLM interpreters: handed over only when started as the server would be, and
never left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deployments import spares
from deployments.local import DEFAULT_PYTHON
from tests.utils.vllm import needs_vllm, pid_alive

pytestmark = needs_vllm

ENV = {"PATH": os.environ["PATH"], "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _pid_of(key: str) -> int:
    return spares._spares[key].pid


def test_an_unused_spare_is_killed_when_its_run_ends(tmp_path: Path) -> None:
    spares.start("sub-unused", DEFAULT_PYTHON, ENV, tmp_path)
    pid = _pid_of("sub-unused")
    assert pid_alive(pid)
    spares.discard("sub-unused")
    assert not pid_alive(pid) and "sub-unused" not in spares._spares
    spares.discard("sub-unused")  # twice is harmless


@pytest.mark.parametrize(
    "change",
    [
        {"OMP_NUM_THREADS": "2"},  # read while importing: a different server
        {"VLLM_LOGGING_CONFIG_PATH": "/elsewhere.json"},
    ],
)
def test_a_spare_started_differently_is_not_handed_over(
    tmp_path: Path, change: dict[str, str]
) -> None:
    spares.start("sub-differs", DEFAULT_PYTHON, ENV, tmp_path)
    pid = _pid_of("sub-differs")
    assert spares.take("sub-differs", DEFAULT_PYTHON, {**ENV, **change}) is None
    assert not pid_alive(pid), "the mismatched spare was left running"


def test_keys_read_once_the_server_runs_may_differ(tmp_path: Path) -> None:
    spares.start("sub-late", DEFAULT_PYTHON, ENV, tmp_path)
    pid = _pid_of("sub-late")
    later = {**ENV, "HOME": str(tmp_path), "S3_ENDPOINT_URL": "http://127.0.0.1:1"}
    spare = spares.take("sub-late", DEFAULT_PYTHON, later, late={"S3_ENDPOINT_URL"})
    try:
        assert spare is not None and spare.pid == pid
        assert spares.take("sub-late", DEFAULT_PYTHON, later) is None  # taken once
    finally:
        if spare is not None:
            spare.kill()


def test_a_dead_spare_is_not_handed_over(tmp_path: Path) -> None:
    spares.start("sub-dead", DEFAULT_PYTHON, ENV, tmp_path)
    proc = spares._spares["sub-dead"].proc
    assert proc is not None
    proc.kill()
    proc.wait()
    assert spares.take("sub-dead", DEFAULT_PYTHON, ENV) is None
