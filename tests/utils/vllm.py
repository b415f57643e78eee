"""Helpers for tests that need the serving environment."""

from __future__ import annotations

import os
import subprocess

import httpx
import pytest

from deployments.local import DEFAULT_PYTHON

# Outside CI a developer without the serving venv may skip these; in CI (CI=true) they run
# and fail loudly, so a missing runtime can never pass as a green suite.
needs_vllm = pytest.mark.skipif(
    not DEFAULT_PYTHON.exists() and os.environ.get("CI") != "true",
    reason=f"serving venv missing ({DEFAULT_PYTHON}); `make env` creates it",
)


def vllm_processes() -> list[str]:
    """Command lines of live vLLM API servers on this machine, spare interpreters (which
    become servers) included."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    marks = ("vllm.entrypoints.openai.api_server", "paddock_serving.spare")
    return [line for line in out.splitlines() if any(m in line for m in marks)]


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def chat(endpoint: str, model: str, text: str, *, max_tokens: int = 8) -> httpx.Response:
    """One non-streaming chat completion, as a user's first message."""
    return httpx.post(
        f"{endpoint}/v1/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens,
        },
        timeout=60,
    )
