"""The cleanup parks idle Kubernetes models (kmock) instead of retiring them, and the
router wakes them again.

The Kubernetes models are real Deployments the backend made on kmock, with bounds that
let paddock park them (min_replicas 0); the local ones are real process groups, which
cannot be parked and are made inactive and stopped as before.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from prefect.artifacts import Artifact

from deployments.kubernetes import KubernetesBackend
from paddock import conversations, crud, maintenance, verdicts, waking
from paddock.maintenance import parking
from paddock.models import ConversationMode, Status, utcnow
from tests.chat.test_router_wake import deployment_name, replicas, route, wakes
from tests.deployments.kube import KmockThread, make_spec
from tests.maintenance.conftest import Serve
from tests.maintenance.seeding import (
    active_deployments,
    chat,
    set_endpoint,
    status_of,
    submission,
)
from tests.utils.vllm import pid_alive

HOUR = 3600.0
DEAD = "http://127.0.0.1:9"  # a parked model's pods answer nothing


@pytest.fixture
def kube(
    backend: KubernetesBackend,
    monkeypatch: pytest.MonkeyPatch,
) -> KubernetesBackend:
    """The cleanup's "kubernetes" backend is the one on kmock (the process default opens
    it from the kubeconfig); the local backend stays the real one."""
    real = parking._open
    monkeypatch.setattr(
        parking, "_open", lambda name: backend if name == "kubernetes" else real(name)
    )
    return backend


def on_kubernetes(kube: KubernetesBackend, *, name: str, chatted_h: float) -> str:
    """A model deployed 30 h ago as a Kubernetes Deployment, last chatted with `chatted_h`
    hours ago."""
    sid = submission(Status.deployed, name=name, age_s=30 * HOUR)
    handle = kube.start(make_spec(submission_id=sid, served_name=name))
    crud.record_deployment(submission_id=sid, backend="kubernetes", endpoint=DEAD, handle=handle)
    set_endpoint(sid, DEAD)
    chat(sid, age_s=chatted_h * HOUR)
    return sid


@pytest.mark.usefixtures("prefect_harness")
def test_an_idle_kubernetes_model_is_parked_once_and_the_router_wakes_it(
    kube: KubernetesBackend,
    k8s: KmockThread,
    serve: Serve,
) -> None:
    from flows.maintenance import cleanup

    sleeper = on_kubernetes(kube, name="sleeper", chatted_h=25)
    busy = on_kubernetes(kube, name="busy", chatted_h=0.1)
    local = submission(Status.deployed, name="local", age_s=30 * HOUR)
    pid = serve(local)
    set_endpoint(local, active_deployments(local)[0].endpoint)

    dry = cleanup(dry_run=True, idle_hours=24)
    assert {(r["action"], r["target"], r["result"]) for r in dry} == {
        ("park", sleeper, "dry run"),
        ("idle", local, "dry run"),
    }
    assert replicas(kube, sleeper) == 1 and pid_alive(pid)
    stale = maintenance.plan_cleanup(
        maintenance.read_tables(), maintenance.CleanupPolicy(24, 60), now=utcnow()
    )

    rows = cleanup(idle_hours=24)

    assert {(r["action"], r["target"], r["result"]) for r in rows} == {
        ("park", sleeper, "done"),
        ("idle", local, "done"),
    }
    assert replicas(kube, sleeper) == 0 and replicas(kube, busy) == 1
    assert status_of(sleeper) == Status.deployed and active_deployments(sleeper)
    assert status_of(local) == Status.inactive and not pid_alive(pid)
    report = Artifact.get("maintenance-cleanup-report")
    assert report is not None and f"did **park** `{sleeper}`" in str(report.data)

    # Parked already: the next cleanup has nothing to do, and a stale plan says so.
    assert cleanup(idle_hours=24) == []
    [park] = [a for a in stale if a.kind is maintenance.Kind.park]
    [outcome] = maintenance.apply_all([park], dry_run=False)
    assert outcome.result == "skipped: already parked (scaled to zero)"
    assert replicas(kube, sleeper) == 0

    # The router keeps users from it and, once the ranking would give it users (busy has
    # its ratings, the sleeper none), wakes it: one scale request, back to its floor.
    for _ in range(3):
        c = conversations.start_conversation(
            mode=ConversationMode.beta, user_id="u", submission_id=busy
        )
        verdicts.end_with_feedback(conversation_id=c.id, thumbs_up=True, text=None)
    waker = waking.Waker(opener=lambda name: kube if name == "kubernetes" else None, cache_s=0)
    decision = route(waker)
    assert decision.chosen == [busy]
    health = {c.submission_id: c.health for c in decision.candidates}
    assert "waking: scaled from 0 to 1 replica" in health[sleeper]
    assert len(wakes(k8s, deployment_name(sleeper))) == 1
    assert replicas(kube, sleeper) == 1 and status_of(sleeper) == Status.deployed


def _facts(parkable: bool, parked: bool) -> maintenance.Tables:
    now = utcnow()
    sub = maintenance.SubmissionFacts(
        id="s1",
        developer="alice",
        name="smol",
        status=Status.deployed,
        created_at=now - timedelta(hours=30),
        updated_at=now - timedelta(hours=30),
        endpoint="http://a",
    )
    dep = maintenance.DeploymentFacts(
        1, "s1", "kubernetes", "http://a", now, parkable=parkable, parked=parked
    )
    return maintenance.Tables({"s1": sub}, [dep])


@pytest.mark.parametrize(
    ("parkable", "parked", "kinds"),
    [
        (True, False, [maintenance.Kind.park]),
        (True, True, []),  # nothing to do: parked already
        (False, False, [maintenance.Kind.idle]),  # a target that keeps a replica up
    ],
)
def test_the_planner_parks_only_what_can_be_and_is_not_yet(
    parkable: bool, parked: bool, kinds: list[maintenance.Kind]
) -> None:
    plan = maintenance.plan_cleanup(
        _facts(parkable, parked), maintenance.CleanupPolicy(24, 60), now=utcnow()
    )
    assert [a.kind for a in plan] == kinds
