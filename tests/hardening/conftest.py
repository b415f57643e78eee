"""Hostile submissions, served from a real hub mirror, S3 and local directories; and the
recorder that turns the tests into the README's tables of hostile inputs, faults, races
and loads.

``pytest tests/hardening --hardening-report PATH`` writes one record per case that
passed — its category, what was done and from where, the stage it hit, the outcome and
what the developer was told (or, for a fault, what happened) — and
``bench/hardening_table.py PATH`` prints one markdown table per category. The
table is generated from assertions that held, so it cannot claim a refusal that did not
happen. (The option exists when pytest starts in or below ``tests/hardening``; from
elsewhere, set ``PADDOCK_HARDENING_REPORT=PATH`` instead.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from paddock.config import reset_settings

_RECORDS = pytest.StashKey[list[dict[str, Any]]]()
_PASSED = pytest.StashKey[bool]()
_ENV = "PADDOCK_HARDENING_REPORT"
CATEGORIES = ("hostile input", "fault", "race", "load")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--hardening-report",
        default=None,
        metavar="PATH",
        help="write the hardening cases (category, kind, source, stage, outcome, reason) as "
        "JSON to PATH",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[_PASSED] = report.passed


def _report_path(config: pytest.Config) -> str | None:
    try:
        option = config.getoption("--hardening-report")
    except ValueError:
        option = None
    return option or os.environ.get(_ENV) or None


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = _report_path(session.config)
    records = session.config.stash.get(_RECORDS, [])
    if path and records:
        Path(path).write_text(json.dumps(records, indent=2, ensure_ascii=False) + "\n")


@dataclass
class Hardening:
    """What one hardening test did to paddock (a hostile input, a fault, a race, a load)
    and what happened."""

    nodeid: str
    records: list[dict[str, Any]] = field(default_factory=list)

    def record(
        self,
        *,
        kind: str,
        source: str,
        stage: str,
        reason: str,
        outcome: str = "refused",
        category: str = "hostile input",
    ) -> None:
        if category not in CATEGORIES:
            raise ValueError(f"category {category!r} is not one of {CATEGORIES}")
        self.records.append(
            {
                "category": category,
                "kind": kind,
                "source": source,
                "stage": stage,
                "outcome": outcome,
                "reason": reason,
                "test": self.nodeid,
            }
        )


@pytest.fixture
def hardening(request: pytest.FixtureRequest) -> Iterator[Hardening]:
    """Record what a case did and what happened, kept only if the test passed."""
    recorder = Hardening(request.node.nodeid)
    yield recorder
    if request.node.stash.get(_PASSED, False):
        request.config.stash.setdefault(_RECORDS, []).extend(asdict(recorder)["records"])


@pytest.fixture(scope="session")
def variant(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``variant(kind)``: the tiny model broken one way (``make_variant``), built once."""
    from paddock.testkit.tiny_model import make_variant

    root = tmp_path_factory.mktemp("hostile-variants")
    built: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in built:
            built[kind] = make_variant(tiny_model, root / kind, kind)
        return built[kind]

    return get


@pytest.fixture(scope="session")
def on_hub(hub: Any, variant: Callable[[str], Path]) -> Callable[[str], str]:
    """``on_hub(kind)``: the variant published on the hub mirror; returns its repo id."""
    published: dict[str, str] = {}

    def publish(kind: str) -> str:
        if kind not in published:
            repo = f"hostile/{kind.replace('_', '-')}"
            hub.add_model(repo, variant(kind))
            published[kind] = repo
        return published[kind]

    return publish


def upload_dir(s3: Any, src: Path, prefix: str) -> str:
    """Every regular file under ``src`` (links not followed) to ``s3://sources/prefix/``."""
    client = s3.client()
    for root, _dirs, names in os.walk(src, followlinks=False):
        for name in names:
            path = Path(root) / name
            if path.is_file() and not path.is_symlink():
                key = f"{prefix}/{path.relative_to(src).as_posix()}"
                client.upload_file(str(path), "sources", key)
    return f"s3://sources/{prefix}"


@pytest.fixture(scope="session")
def on_s3(s3: Any, variant: Callable[[str], Path]) -> Callable[[str], str]:
    """``on_s3(kind)``: the variant uploaded to the sources bucket; returns its URL."""
    published: dict[str, str] = {}

    def publish(kind: str) -> str:
        if kind not in published:
            published[kind] = upload_dir(s3, variant(kind), f"hostile/{kind}")
        return published[kind]

    return publish


@pytest.fixture(scope="session")
def on_local(paddock_home: Path, tiny_model: Path) -> Callable[[str], str]:
    """``on_local(kind)``: the variant built under the allowed source root; its path."""
    from paddock.testkit.tiny_model import make_variant

    root = paddock_home / "sources" / "hostile"
    root.mkdir(parents=True, exist_ok=True)

    def publish(kind: str) -> str:
        dest = root / kind
        if not dest.exists():
            make_variant(tiny_model, dest, kind)
        return str(dest)

    return publish


@pytest.fixture
def settings_env() -> Iterator[Callable[..., None]]:
    """``settings_env(PADDOCK_X="v", ...)``: change paddock settings for one test."""
    saved: dict[str, str | None] = {}

    def change(**values: str) -> None:
        for key, value in values.items():
            saved.setdefault(key, os.environ.get(key))
            os.environ[key] = value
        reset_settings()

    yield change
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    reset_settings()
