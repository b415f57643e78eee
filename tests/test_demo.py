"""The one slow, real-model case: `make demo`'s path with SmolLM2-135M-Instruct."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.utils.vllm import needs_vllm, vllm_processes

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.vllm
@needs_vllm
def test_demo_serves_smollm2_and_answers(tmp_path: Path) -> None:
    before = len(vllm_processes())
    done = subprocess.run(
        [sys.executable, "-m", "paddock.demo", "--home", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Paris" in done.stdout  # a real answer, through the whole pipeline
    for stage in ("download", "sanity", "serialize", "upload", "deploy", "warmup", "stress"):
        assert stage in done.stdout
    assert "the router chose smollm2-demo" in done.stdout
    developer_view = done.stdout.split("the developer reads her feedback")[1]
    assert "[email]" in developer_view  # what the developer reads is scrubbed
    assert "demo.user@example.com" not in developer_view
    assert "model server stopped" in done.stdout
    assert len(vllm_processes()) == before
