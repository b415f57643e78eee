"""A real paddock API on a free port, over a paddock home of its own.

The server runs in a thread of the test process, so a test can set up rows directly; the
flow runs it starts are child processes that inherit this package's environment: a hub
endpoint nobody listens on, so every run fails fast in its download stage without vLLM.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from paddock import accounts, crud
from paddock.config import reset_settings
from paddock.testkit.ports import free_port

SETTLED = {"deployed", "failed", "inactive", "torndown", "archived"}


@dataclass(frozen=True)
class Api:
    url: str
    home: Path

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@dataclass(frozen=True)
class Dev:
    id: str
    name: str
    key: str


@pytest.fixture(scope="package")
def api_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("api") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PADDOCK_HOME", str(home))
        mp.setenv("PREFECT_HOME", str(home / "prefect"))
        mp.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
        for name in ("PADDOCK_API_URL", "PADDOCK_API_KEY"):
            mp.delenv(name, raising=False)
        reset_settings()
        yield home
    reset_settings()  # back to the session's home


@pytest.fixture(scope="package")
def api(api_home: Path) -> Iterator[Api]:
    from paddock.api.app import create_app

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="paddock-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.02)
    yield Api(url=f"http://127.0.0.1:{port}", home=api_home)
    server.should_exit = True
    thread.join(timeout=10)


def new_developer() -> Dev:
    developer = accounts.create_developer(name=f"dev-{uuid.uuid4().hex[:10]}")
    return Dev(developer.id, developer.name, accounts.issue_key(developer_id=developer.id))


@pytest.fixture
def dev(api: Api) -> Dev:
    return new_developer()


@pytest.fixture
def other(api: Api) -> Dev:
    return new_developer()


def wait_settled(api: Api, key: str, submission_id: str, timeout: float = 240) -> dict[str, Any]:
    """Poll the status route until the flow run leaves the pipeline's working statuses."""
    deadline = time.monotonic() + timeout
    with api.client(key) as client:
        while True:
            report: dict[str, Any] = client.get(f"/submissions/{submission_id}").json()
            if report["status"] in SETTLED or time.monotonic() > deadline:
                return report
            time.sleep(1)


def make_submission(developer: Dev, **values: Any) -> str:
    """A row as a submission would leave it, without starting any run."""
    sub = crud.create_submission(
        developer=developer.name,
        source=values.pop("source", "org/model"),
        display_name=values.pop("display_name", "model"),
        **values,
    )
    return sub.id
