"""Starting a submission's flow run: the one place that decides how runs are started.

With the platform stack up (`paddock up`: PREFECT_API_URL names a server that has the
`submission/submission` deployment) a run is a flow run of that deployment, picked up by
the `paddock` work pool's worker and visible in the Prefect UI. Without it, a run is a
detached child process on this machine against an ephemeral Prefect. Either way runs are
detached, so neither a closed terminal nor a restarted API server stops one, and the CLI
and the API cannot tell which path was taken.
"""

from __future__ import annotations

import abc
import subprocess
import threading
import time
from typing import TYPE_CHECKING
from uuid import UUID

from paddock import sla
from paddock.config import get_settings
from paddock.errors import ConfigurationError
from paddock.nudge import nudge
from paddock.runner import spawn_flow, spawn_module

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

__all__ = [
    "DEPLOYMENT",
    "Run",
    "ChildRun",
    "DeploymentRun",
    "start_run",
    "run_stress",
    "run_tag",
]

DEPLOYMENT = "submission/submission"


class Run(abc.ABC):
    """A started flow run, for a caller that wants to follow it."""

    submission_id: str

    @abc.abstractmethod
    def alive(self) -> bool: ...

    @abc.abstractmethod
    def wait(self) -> int:
        """Until the run ends; 0 if it succeeded."""


class ChildRun(Run):
    """A flow run in a child process of this one."""

    def __init__(self, submission_id: str, proc: subprocess.Popen[bytes]) -> None:
        self.submission_id = submission_id
        self._proc = proc
        # Reap the child when it ends, so a long-lived API server collects no zombies.
        threading.Thread(target=proc.wait, name=f"reap-{submission_id}", daemon=True).start()

    def alive(self) -> bool:
        return self._proc.poll() is None

    def wait(self) -> int:
        return self._proc.wait()


class DeploymentRun(Run):
    """A flow run of the deployment, followed through the Prefect API."""

    def __init__(self, submission_id: str, flow_run_id: UUID) -> None:
        self.submission_id = submission_id
        self.flow_run_id = flow_run_id

    def _state(self) -> tuple[bool, bool]:
        """(final, completed) as the Prefect server sees the run now."""
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            state = client.read_flow_run(self.flow_run_id).state
        if state is None:
            return False, False
        return state.is_final(), state.is_completed()

    def alive(self) -> bool:
        return not self._state()[0]

    def wait(self, poll: float = 2.0) -> int:
        while True:
            final, completed = self._state()
            if final:
                return 0 if completed else 1
            time.sleep(poll)


def run_tag(submission_id: str) -> str:
    """The tag on every flow run of a submission (UI filter, and the run generation)."""
    return f"submission:{submission_id}"


def start_run(submission_id: str) -> Run:
    """Start (or resume) the submission's flow; stages an earlier run finished are skipped.

    A just-accepted submission's SLA clock starts here, before its run exists, so time
    spent waiting for a worker counts. Raises OSError when no run could be started.
    """
    opened = sla.open_clock(submission_id)
    sla.settle(submission_id)  # a resume after a finished run: judge that run first
    try:
        deployment = _deployment()
        if deployment is None:
            return ChildRun(submission_id, spawn_flow(submission_id, detach=True))
        return _run_deployment(submission_id, deployment)
    except BaseException:
        if opened:
            sla.drop_clock(submission_id)
        raise


def _deployment() -> UUID | None:
    """The submission deployment's id when runs should go through it, else None."""
    import httpx
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    mode = get_settings().dispatch
    if mode == "embedded":
        return None
    url = PREFECT_API_URL.value()
    if not url:
        if mode == "deployment":
            raise ConfigurationError(
                "PADDOCK_DISPATCH=deployment needs PREFECT_API_URL: run `paddock up` and "
                "export the URL it prints"
            )
        return None
    try:
        with _client() as client:
            return client.read_deployment_by_name(DEPLOYMENT).id
    except httpx.HTTPError as exc:
        raise ConnectionError(f"the Prefect server at {url} did not answer: {exc}") from exc
    except ObjectNotFound:
        if mode == "deployment":
            raise ConfigurationError(
                f"the Prefect server at {url} has no {DEPLOYMENT} deployment; `paddock up` "
                "(or `prefect deploy --all`) creates it"
            ) from None
        return None


def _client() -> SyncPrefectClient:
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _run_deployment(submission_id: str, deployment_id: UUID) -> DeploymentRun:
    """A flow run of the deployment, at most one per run generation.

    The generation is how many of the submission's flow runs have ended: while one is
    scheduled or running, a second start (a double click, a retried request) carries the
    same idempotency key and gets that run back; once it has ended, a start is a new run,
    which resumes where the last one stopped.
    """
    import httpx
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import FlowRun, StateType
    from prefect.deployments import run_deployment

    tag = run_tag(submission_id)
    final = [StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED]
    try:
        with _client() as client:
            ended = client.count_flow_runs(
                flow_run_filter=FlowRunFilter(
                    tags=FlowRunFilterTags(all_=[tag]),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=final)),
                ),
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            )
        flow_run = run_deployment(
            deployment_id,
            parameters={"submission_id": submission_id},
            timeout=0,
            idempotency_key=f"paddock-{submission_id}-{ended}",
            tags=["paddock", tag],
            as_subflow=False,
        )
    except httpx.HTTPError as exc:
        raise ConnectionError(f"the Prefect server did not take the run: {exc}") from exc
    assert isinstance(flow_run, FlowRun)  # called from sync code: not a coroutine
    nudge()  # the stack's worker asks for it now, not at its next poll
    return DeploymentRun(submission_id, flow_run.id)


def run_stress(
    *, submission_id: str, endpoint: str, model: str, profile: str, log_name: str
) -> int:
    """Stress-test a live model again in a `stress` flow run; returns its exit code."""
    return spawn_module(
        "flows.stress", endpoint, model, profile, submission_id, log_name=log_name
    ).wait()
