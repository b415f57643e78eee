"""Shared fixtures for the testkit's own tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from paddock.testkit.tiny_model import build_tiny_llama


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny Llama build per session (a few seconds)."""
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")
