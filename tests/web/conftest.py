"""The web pages in a real headless Chromium, against the real app and real model servers.

The app runs under uvicorn in a thread of the test process, so a test sets up rows
directly and reads back what the pages stored. Each test gets a database of its own (the
router looks at every deployed model, so one test's models must not change another's
choice); the server follows because settings are re-read after `reset_settings`.

Model servers are `FakeServer`s: real HTTP and a real SSE stream shaped like vLLM's.

Screenshots go to the test's temporary directory, and also to `PADDOCK_SCREENSHOT_DIR`
when it is set, for a person to look at.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlmodel import col, select

from paddock import accounts, crud, lifecycle
from paddock.config import reset_settings
from paddock.db import session_scope
from paddock.models import StageRun, StageStatus, Submission, utcnow
from paddock.testkit.ports import free_port
from tests.stress.fakeserver import FakeServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

# Seconds per stage as a real run of a small model takes them, so the dashboard's
# timeline is read as it would be in use (the rows are written by the test, not a flow).
STAGE_SECONDS = {
    "download": 14.2,
    "sanity": 4.1,
    "runtime": 3.6,
    "serialize": 9.8,
    "upload": 6.4,
    "deploy": 38.5,
    "warmup": 7.2,
    "stress": 31.0,
    "publish": 0.3,
}


def _browser_or_skip() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing: CI must run the browser tests (apt install chromium)")
    pytest.skip(f"{CHROMIUM} is not installed")


# --------------------------------------------------------------------------- the app


@dataclass(frozen=True)
class Site:
    url: str
    home: Path


@pytest.fixture(scope="package")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    home = tmp_path_factory.mktemp("web") / "home"
    home.mkdir()  # Prefect makes its own home below it without parents, when first imported
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PADDOCK_HOME", str(home))
        mp.setenv("PREFECT_HOME", str(home / "prefect"))
        # A model that goes silent mid-reply is given up on in seconds, not a minute.
        mp.setenv("PADDOCK_RELAY_READ_TIMEOUT_S", "2")
        for name in ("PADDOCK_API_URL", "PADDOCK_API_KEY", "PADDOCK_DATABASE_URL"):
            mp.delenv(name, raising=False)
        reset_settings()
        from paddock.api.app import create_app

        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, name="paddock-web", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the paddock app did not start")
            time.sleep(0.02)
        try:
            yield Site(url=f"http://127.0.0.1:{port}", home=home)
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            reset_settings()
    reset_settings()


@pytest.fixture(autouse=True)
def own_database(site: Site, tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'web.db'}"
    os.environ["PADDOCK_DATABASE_URL"] = url
    reset_settings()
    yield url
    os.environ.pop("PADDOCK_DATABASE_URL", None)
    reset_settings()


# --------------------------------------------------------------------------- model servers


@pytest.fixture(scope="package")
def model_a() -> Iterator[FakeServer]:
    with FakeServer(tokens=12) as server:
        yield server


@pytest.fixture(scope="package")
def model_b() -> Iterator[FakeServer]:
    with FakeServer(tokens=7) as server:
        yield server


@pytest.fixture(autouse=True)
def healthy_servers(model_a: FakeServer, model_b: FakeServer) -> None:
    """Undo what a test changed on the shared model servers."""
    for server, tokens in ((model_a, 12), (model_b, 7)):
        server.tokens = tokens
        server.first_token_delay_s = 0.0
        server.token_delay_s = 0.0
        server.fail_every = 0
        server.stall_after = None


@dataclass(frozen=True)
class Dev:
    id: str
    name: str
    key: str


def developer(name: str) -> Dev:
    row = accounts.create_developer(name=name)
    return Dev(row.id, row.name, accounts.issue_key(developer_id=row.id))


Deploy = Callable[..., Submission]


@pytest.fixture
def deploy() -> Deploy:
    """A submission taken through every pipeline status to `deployed`, with the stage
    rows a run leaves (the download needed a second attempt), served by ``server``."""

    def make(server: FakeServer, *, name: str, developer: str) -> Submission:
        sub = crud.create_submission(
            developer=developer, source=f"paddock-test/{name}", display_name=name
        )
        for stage in lifecycle.STAGES:
            if stage.enters:
                lifecycle.transition(sub.id, stage.status)
            if stage.name == "download":
                first = crud.start_stage(submission_id=sub.id, stage=stage.name)
                assert first.id is not None
                crud.finish_stage(
                    run_id=first.id,
                    status=StageStatus.failed,
                    detail={"error": "the hub reset the connection; retried"},
                )
            run = crud.start_stage(submission_id=sub.id, stage=stage.name)
            assert run.id is not None
            crud.finish_stage(run_id=run.id, status=StageStatus.succeeded)
        lifecycle.transition(sub.id, lifecycle.PIPELINE[-1], endpoint=server.url)
        _spread_stage_times(sub.id)
        dep = crud.record_deployment(
            submission_id=sub.id, backend="local", endpoint=None, handle={"served_name": name}
        )
        crud.set_deployment_endpoint(deployment_id=dep, endpoint=server.url)
        found = crud.get_submission(submission_id=sub.id)
        assert found is not None and found.status == "deployed"
        return found

    return make


def _spread_stage_times(submission_id: str) -> None:
    with session_scope() as session:
        runs = session.exec(
            select(StageRun)
            .where(StageRun.submission_id == submission_id)
            .order_by(col(StageRun.id))
        )
        moment = utcnow() - timedelta(seconds=sum(STAGE_SECONDS.values()) + 5)
        for run in list(runs):
            seconds = STAGE_SECONDS[run.stage] / (2 if run.stage == "download" else 1)
            run.started_at = moment
            run.ended_at = moment + timedelta(seconds=seconds)
            moment = run.ended_at
            session.add(run)


# --------------------------------------------------------------------------- the browser


@pytest.fixture(scope="package")
def browser(site: Site) -> Iterator[Any]:
    _browser_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Tab:
    """A page in a fresh browser context (its own localStorage), and what went wrong in it."""

    page: Any
    url: str
    shots: Path
    errors: list[str]

    def goto(self, path: str) -> None:
        self.page.goto(self.url + path)

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        extra = os.environ.get("PADDOCK_SCREENSHOT_DIR")
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(extra) / path.name)
        return path

    def assert_clean(self, *, http_errors: int = 0) -> None:
        """No script error nor CSP violation; the browser's own line for each non-2xx
        response the test caused is expected, any other is not."""
        http = [e for e in self.errors if "Failed to load resource" in e]
        other = [e for e in self.errors if e not in http]
        assert other == []
        assert len(http) == http_errors, http


@pytest.fixture
def tab(browser: Any, site: Site, tmp_path: Path) -> Iterator[Tab]:
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    shots = tmp_path / "shots"
    shots.mkdir()
    try:
        yield Tab(page, site.url, shots, errors)
    finally:
        context.close()
