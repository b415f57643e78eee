"""Every route that asks the router answers a waking model with 503 and `Retry-After`.

The only model is a real Kubernetes Deployment on kmock, parked at zero replicas; its
endpoint answers nothing (its pods are not up yet). A route that asks the router wakes it
(one scale request) and tells the client how long to wait, as the schema documents.
"""

from __future__ import annotations

import httpx
import pytest

from deployments.kubernetes import KubernetesBackend
from paddock import waking
from paddock.api.app import create_app
from tests.chat.conftest import Api, Deploy, make_dev
from tests.chat.test_router_wake import deployment_name, park, wakes
from tests.deployments.kube import KmockThread

DEAD = "http://127.0.0.1:9"


@pytest.fixture
def parked(
    deploy: Deploy,
    backend: KubernetesBackend,
    waker: waking.Waker,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """The only served model, parked; the API process's waker reads kmock."""
    monkeypatch.setattr(waking, "_default", waker)
    return park(deploy, backend, DEAD, name="sleeper")


def _waiting(resp: httpx.Response) -> None:
    assert resp.status_code == 503, resp.text
    assert resp.headers["Retry-After"] == str(waking.RETRY_AFTER_S)
    assert "waking up" in resp.json()["detail"]


def test_an_auto_completion_is_told_to_retry_while_the_model_wakes(
    parked: str,
    api: Api,
    k8s: KmockThread,
) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": "Hi"}]}
    with api.client() as http:
        for _ in range(2):
            _waiting(http.post("/v1/chat/completions", json=body))
    assert len(wakes(k8s, deployment_name(parked))) == 1


def test_the_route_a_developer_asks_about_says_retry_while_the_model_wakes(
    parked: str,
    api: Api,
    k8s: KmockThread,
) -> None:
    dev = make_dev("dana")
    with api.client(dev.key) as http:
        for _ in range(2):
            _waiting(http.get("/route"))
    assert len(wakes(k8s, deployment_name(parked))) == 1


@pytest.mark.parametrize(("method", "path"), [("post", "/v1/chat/completions"), ("get", "/route")])
def test_the_schema_documents_the_header(method: str, path: str) -> None:
    answer = create_app().openapi()["paths"][path][method]["responses"]["503"]
    assert "Retry-After" in answer["headers"]
    assert "waking up" in answer["description"]
