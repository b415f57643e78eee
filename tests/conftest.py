"""Session-wide fixtures: one paddock home, one Prefect, and real local servers.

The environment is set at import time, before anything imports Prefect, so every test
(and every child process a test starts) uses a throwaway home and Prefect database.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_HOME = Path(tempfile.mkdtemp(prefix="paddock-test-"))
os.environ["PADDOCK_HOME"] = str(_HOME)
os.environ["PREFECT_HOME"] = str(_HOME / "prefect")
os.environ["PADDOCK_RETRY_BASE_SECONDS"] = "0.05"
os.environ["PADDOCK_ALLOWED_SOURCE_DIRS"] = f'["{_HOME / "sources"}"]'
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"] = "ignore"
os.environ.pop("PADDOCK_DATABASE_URL", None)
os.environ.pop("HF_ENDPOINT", None)

from paddock.config import reset_settings  # noqa: E402

reset_settings()

from tests.utils.databases import database as database  # noqa: E402  (fixtures for every test)
from tests.utils.databases import pg_url as pg_url  # noqa: E402

CACHE = Path(os.environ.get("PADDOCK_TEST_CACHE", Path.home() / ".cache" / "paddock-tests"))


@pytest.fixture(scope="session")
def paddock_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """A tiny random-weight Llama (head_dim 64) with a trained BPE tokenizer; cached."""
    from paddock.testkit.tiny_model import build_tiny_llama

    return build_tiny_llama(CACHE / "tiny-llama")


@pytest.fixture(scope="session")
def s3() -> Iterator[object]:
    from paddock.testkit.s3 import S3Server

    with S3Server() as server:
        server.create_bucket("models")
        server.create_bucket("sources")
        yield server


@pytest.fixture(scope="session")
def hub(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """An olah mirror serving the tiny model and one broken copy per bad-input kind."""
    from paddock.testkit.hub import HubMirror
    from paddock.testkit.tiny_model import VARIANT_KINDS, make_variant

    root = tmp_path_factory.mktemp("hub")
    with HubMirror(root / "olah") as mirror:
        mirror.add_model("paddock-test/tiny", tiny_model, tag="v1")
        for kind in VARIANT_KINDS:
            broken = make_variant(tiny_model, root / "variants" / kind, kind)
            mirror.add_model(f"paddock-test/{kind.replace('_', '-')}", broken)
        yield mirror
