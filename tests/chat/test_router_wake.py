"""The router and a model parked at zero replicas, against kmock's Kubernetes API.

The parked model is a real Deployment made by the Kubernetes backend and scaled to zero
through it; its endpoint is a fake model server that answers all along (the Service of a
model whose pods are back), so only the router's reading of the backend keeps users away
from it while it is parked. The awake model is a local one, which cannot be parked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
from typing import Any, Literal

import httpx
import pytest

from deployments.kubernetes import KubernetesBackend
from paddock import availability, crud, verdicts, waking
from paddock import conversations as conv
from paddock.models import ConversationMode
from paddock.router import ModelWaking, NoModelAvailable, RouteDecision, RoutePolicy, choose
from tests.chat.conftest import Api, Deploy
from tests.chat.fakes import ChatFakeServer
from tests.deployments.kube import FAST_RETRY, NS, KmockThread, make_spec

POLICY = RoutePolicy(target_feedback=3, probe_timeout_s=0.5, reprobe_s=0.0)


def park(deploy: Deploy, backend: KubernetesBackend, endpoint: str, *, name: str) -> str:
    """A deployed submission served by a Kubernetes Deployment now at zero replicas."""
    sub = deploy(endpoint, name=name)
    handle = backend.start(make_spec(submission_id=sub.id, served_name=name))
    dep = crud.active_deployment(submission_id=sub.id)
    assert dep is not None and dep.id is not None
    crud.close_deployment(deployment_id=dep.id)
    crud.record_deployment(
        submission_id=sub.id, backend="kubernetes", endpoint=endpoint, handle=handle
    )
    backend.scale(handle, 0)
    assert backend.parked(handle)
    return sub.id


def wakes(k8s: KmockThread, handle_name: str) -> list[Any]:
    """The PATCHes of the Deployment that asked for more than zero replicas."""
    path = rf"/apis/apps/v1/namespaces/{NS}/deployments/{handle_name}"
    return [
        r
        for r in k8s.requests("PATCH", path)
        if (json.loads(r.body) if r.body else {}).get("spec", {}).get("replicas", 0) > 0
    ]


def route(waker: waking.Waker, mode: Literal["beta", "arena"] = "beta") -> RouteDecision:
    async def run() -> RouteDecision:
        async with httpx.AsyncClient(trust_env=False) as http:
            return await choose(http, mode=mode, policy=POLICY, waker=waker)

    return asyncio.run(run())


def replicas(backend: KubernetesBackend, submission_id: str) -> int:
    dep = crud.active_deployment(submission_id=submission_id)
    assert dep is not None
    return backend.replicas(dep.handle)


def deployment_name(submission_id: str) -> str:
    dep = crud.active_deployment(submission_id=submission_id)
    assert dep is not None
    return str(dep.handle["name"])


def test_the_router_sends_users_elsewhere_and_wakes_the_parked_model_once(
    deploy: Deploy,
    fake: ChatFakeServer,
    backend: KubernetesBackend,
    k8s: KmockThread,
    waker: waking.Waker,
) -> None:
    awake = deploy(fake.url, name="awake")
    for _ in range(3):  # the awake one has its ratings: the parked one needs them more
        c = conv.start_conversation(mode=ConversationMode.beta, user_id="u", submission_id=awake.id)
        verdicts.end_with_feedback(conversation_id=c.id, thumbs_up=True, text=None)
    sleeper = park(deploy, backend, fake.url, name="sleeper")
    name = deployment_name(sleeper)
    assert wakes(k8s, name) == []

    first = route(waker)
    assert first.chosen == [awake.id]  # never into a cold start
    by_name = {c.name: c for c in first.candidates}
    assert not by_name["sleeper"].healthy
    assert (
        "asleep (scaled to zero); waking: scaled from 0 to 1 replica" in by_name["sleeper"].health
    )
    assert len(wakes(k8s, name)) == 1  # the scale request reached the API
    assert replicas(backend, sleeper) == 1

    # A second conversation while it wakes: no second wake. Its pods are up (the fake
    # answers), so the probe of the model marked down brings it back, and it is chosen.
    second = route(waker)
    assert len(wakes(k8s, name)) == 1
    assert second.chosen == [sleeper]
    assert {c.name: c for c in second.candidates}["sleeper"].health == "recovered (probe answered)"
    assert availability.health_of(submission_ids=[sleeper])[sleeper].healthy


def test_a_parked_model_the_ranking_passes_over_stays_asleep(
    deploy: Deploy,
    fake: ChatFakeServer,
    backend: KubernetesBackend,
    k8s: KmockThread,
    waker: waking.Waker,
) -> None:
    """Parking must hold while others take the traffic: a parked model that already has
    its ratings ranks below the new one, so routing users to the new one wakes nothing."""
    sleeper = park(deploy, backend, fake.url, name="sleeper")
    for _ in range(3):
        c = conv.start_conversation(mode=ConversationMode.beta, user_id="u", submission_id=sleeper)
        verdicts.end_with_feedback(conversation_id=c.id, thumbs_up=True, text=None)
    fresh = deploy(fake.url, name="fresh")

    for _ in range(3):
        decision = route(waker)
        assert decision.chosen == [fresh.id]
        health = {c.name: c.health for c in decision.candidates}
        assert health["sleeper"] == "asleep (scaled to zero); left asleep: others rank first"
    assert wakes(k8s, deployment_name(sleeper)) == []
    assert replicas(backend, sleeper) == 0

    # An arena needs two: now the sleeper is among the models users would get, so woken.
    with pytest.raises(ModelWaking):
        route(waker, mode="arena")
    assert len(wakes(k8s, deployment_name(sleeper))) == 1


def test_a_parked_model_alone_is_a_503_style_answer_and_woken_once(
    deploy: Deploy,
    backend: KubernetesBackend,
    k8s: KmockThread,
    waker: waking.Waker,
) -> None:
    dead = "http://127.0.0.1:9"  # its pods are not up yet: nothing answers
    sleeper = park(deploy, backend, dead, name="sleeper")
    name = deployment_name(sleeper)
    for _ in range(3):
        with pytest.raises(ModelWaking, match="1 is waking up after being idle") as caught:
            route(waker)
        assert caught.value.retry_after == waking.RETRY_AFTER_S
    assert len(wakes(k8s, name)) == 1
    assert replicas(backend, sleeper) == 1
    row = availability.health_of(submission_ids=[sleeper])[sleeper]
    assert not row.healthy and waking.is_waking(row.error)


def test_a_model_parked_again_later_is_woken_again(
    deploy: Deploy, backend: KubernetesBackend, k8s: KmockThread
) -> None:
    waker = waking.Waker(
        opener=lambda name: backend if name == "kubernetes" else None, cache_s=0, grace_s=0
    )
    sleeper = park(deploy, backend, "http://127.0.0.1:9", name="sleeper")
    with pytest.raises(ModelWaking):
        route(waker)
    dep = crud.active_deployment(submission_id=sleeper)
    assert dep is not None
    backend.scale(dep.handle, 0)  # idle again: parked again
    with pytest.raises(ModelWaking):
        route(waker)
    assert len(wakes(k8s, deployment_name(sleeper))) == 2


def test_the_chat_route_answers_503_with_retry_after_while_the_model_wakes(
    deploy: Deploy,
    backend: KubernetesBackend,
    k8s: KmockThread,
    waker: waking.Waker,
    api: Api,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(waking, "_default", waker)  # the API process's waker, on kmock
    sleeper = park(deploy, backend, "http://127.0.0.1:9", name="sleeper")
    with api.client() as http:
        for _ in range(2):
            resp = http.post("/chat/conversations", json={"user_id": "user-1", "consent": True})
            assert resp.status_code == 503, resp.text
            assert resp.headers["Retry-After"] == str(waking.RETRY_AFTER_S)
            assert "waking up" in resp.json()["detail"]
    assert len(wakes(k8s, deployment_name(sleeper))) == 1


class RacingBackend(KubernetesBackend):
    """Two API processes that both read "parked" before either has scaled: the race the
    claim on the health row settles. Each caller waits (up to 2 s) for the other to have
    read too; one that waits alone was the only one let through."""

    def __init__(self, barrier: threading.Barrier, **kw: Any) -> None:
        super().__init__(**kw)
        self.barrier = barrier

    def wake(self, handle: dict[str, Any]) -> int | None:
        parked = self.parked(handle)
        with contextlib.suppress(threading.BrokenBarrierError):
            self.barrier.wait(timeout=2)
        if not parked:
            return None
        self.scale(handle, 1)
        return 1


def test_two_processes_racing_to_wake_it_wake_it_once(
    deploy: Deploy, backend: KubernetesBackend, k8s: KmockThread
) -> None:
    sleeper = park(deploy, backend, "http://127.0.0.1:9", name="sleeper")
    barrier = threading.Barrier(2)
    racing = RacingBackend(
        barrier, namespace=NS, api_client=backend.api.client, retry=FAST_RETRY, min_replicas=0
    )
    wakers = [waking.Waker(opener=lambda _name: racing, cache_s=0) for _ in range(2)]
    errors: list[BaseException] = []

    def one(w: waking.Waker) -> None:
        try:
            route(w)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(w,)) for w in wakers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(errors) == 2 and all(isinstance(e, ModelWaking) for e in errors), errors
    assert len(wakes(k8s, deployment_name(sleeper))) == 1


def test_a_wake_the_api_refuses_is_reported_and_not_retried_at_once(
    deploy: Deploy, backend: KubernetesBackend, k8s: KmockThread, waker: waking.Waker
) -> None:
    sleeper = park(deploy, backend, "http://127.0.0.1:9", name="sleeper")
    item = rf"/apis/apps/v1/namespaces/{NS}/deployments/{deployment_name(sleeper)}"
    k8s.on_loop(lambda: k8s.emulator["patch", re.compile(item)] << 403)
    before = len(k8s.requests("PATCH", item))
    for _ in range(2):  # not "waking": the user is not told to come back for nothing
        with pytest.raises(NoModelAvailable, match="0 healthy of 1 served") as caught:
            route(waker)
        assert not isinstance(caught.value, ModelWaking)
    assert len(k8s.requests("PATCH", item)) == before + 1  # one try within the grace
    row = availability.health_of(submission_ids=[sleeper])[sleeper]
    assert row.error is not None and row.error.startswith(waking.WAKE_FAILED), row.error
    assert "403" in row.error
