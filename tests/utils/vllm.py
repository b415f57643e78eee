"""Helpers for tests that need the serving environment."""

from __future__ import annotations

import subprocess

import pytest

from deployments.local import DEFAULT_PYTHON

needs_vllm = pytest.mark.skipif(
    not DEFAULT_PYTHON.exists(),
    reason=f"serving venv missing ({DEFAULT_PYTHON}); `make env` creates it",
)


def vllm_processes() -> list[str]:
    """Command lines of live vLLM API servers on this machine."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "vllm.entrypoints.openai.api_server" in line]


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
