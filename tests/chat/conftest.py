"""Chat-side fixtures: a fresh database per test, fake model servers, deployed models.

Each test gets its own SQLite file: the router looks at every deployed model in the
database, so a model another test left behind would change its choice.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from kubernetes import client

from deployments.kubernetes import KubernetesBackend
from paddock import accounts, crud, waking
from paddock.config import get_settings, reset_settings
from paddock.db import session_scope
from paddock.models import Status, Submission, utcnow
from paddock.testkit.ports import free_port
from tests.chat.fakes import ChatFakeServer
from tests.deployments.kube import FAST_RETRY, NS, KmockThread
from tests.deployments.kube import k8s as k8s  # a fixture, for the router's parked models

Deploy = Callable[..., Submission]


@pytest.fixture(autouse=True)
def chat_db(tmp_path: Path) -> Iterator[str]:
    old = os.environ.get("PADDOCK_DATABASE_URL")
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    os.environ["PADDOCK_DATABASE_URL"] = url
    reset_settings()
    yield url
    if old is None:
        os.environ.pop("PADDOCK_DATABASE_URL", None)
    else:
        os.environ["PADDOCK_DATABASE_URL"] = old
    reset_settings()


@pytest.fixture
def fake() -> Iterator[ChatFakeServer]:
    server = ChatFakeServer(tokens=5)
    with server:
        yield server


def set_status(submission_id: str, status: Status) -> None:
    """Tests put a model straight into a status (the pipeline is not what is tested)."""
    with session_scope() as session:
        sub = session.get(Submission, submission_id)
        assert sub is not None
        sub.status = status
        session.add(sub)


@pytest.fixture
def deploy() -> Deploy:
    """Create a deployed submission served at ``endpoint``; ``age_s`` makes it older."""

    def make(
        endpoint: str,
        *,
        name: str = "model",
        developer: str = "alice",
        params: dict[str, Any] | None = None,
        formatter: dict[str, Any] | None = None,
        age_s: float = 0.0,
        tokenizer: Path | None = None,
    ) -> Submission:
        sub = crud.create_submission(
            developer=developer,
            source=f"org/{name}",
            display_name=name,
            generation_params=params,
            prompt_formatter=formatter,
        )
        with session_scope() as session:
            row = session.get(Submission, sub.id)
            assert row is not None
            row.status = Status.deployed
            row.created_at = utcnow() - timedelta(seconds=age_s)
            session.add(row)
        crud.record_deployment(
            submission_id=sub.id,
            backend="local",
            endpoint=endpoint,
            handle={"served_name": name},
        )
        if tokenizer is not None:
            bundle = get_settings().work_dir / sub.id / "bundle"
            bundle.parent.mkdir(parents=True, exist_ok=True)
            bundle.symlink_to(tokenizer, target_is_directory=True)
        found = crud.get_submission(submission_id=sub.id)
        assert found is not None
        return found

    return make


# --------------------------------------------------------------------------- the API


@dataclass(frozen=True)
class Api:
    url: str

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, trust_env=False)


@dataclass(frozen=True)
class Dev:
    name: str
    key: str


@pytest.fixture(scope="package")
def api() -> Iterator[Api]:
    """The paddock API served by a real uvicorn in a thread (real HTTP, real SSE)."""
    from paddock.api.app import create_app

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="paddock-chat-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.02)
    yield Api(f"http://127.0.0.1:{port}")
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def http(api: Api) -> Iterator[httpx.Client]:
    with api.client() as client:
        yield client


def make_dev(name: str) -> Dev:
    developer = accounts.create_developer(name=name)
    return Dev(developer.name, accounts.issue_key(developer_id=developer.id))


def events(resp: httpx.Response) -> list[Any]:
    """The `data:` payloads of a server-sent event stream, JSON-decoded ([DONE] kept as is)."""
    out: list[Any] = []
    for block in resp.text.split("\n\n"):
        if block.startswith("data: "):
            data = block[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def fresh_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Probe a model marked down on every routing decision (no waiting between probes)."""
    monkeypatch.setenv("PADDOCK_ROUTER_REPROBE_S", "0")
    reset_settings()


# ------------------------------------------------------------ models parked on Kubernetes


@pytest.fixture
def backend(k8s: KmockThread) -> Iterator[KubernetesBackend]:
    """The Kubernetes backend on kmock, allowed to park models at zero replicas."""
    configuration = client.Configuration()
    configuration.host = k8s.url
    with client.ApiClient(configuration) as api_client:
        yield KubernetesBackend(
            namespace=NS,
            api_client=api_client,
            retry=FAST_RETRY,
            min_replicas=0,  # paddock may park these models
            max_replicas=2,
        )


@pytest.fixture
def waker(backend: KubernetesBackend) -> waking.Waker:
    """A waker whose "kubernetes" backend is the one on kmock (the process default opens
    it from the kubeconfig); no cache, so every decision asks the API."""
    return waking.Waker(opener=lambda name: backend if name == "kubernetes" else None, cache_s=0)
