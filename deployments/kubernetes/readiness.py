"""Is a submission's workload serving yet, and if not, why not?

An object's status says whether it is ready (a Deployment's finished rollout, an
InferenceService's `Ready` condition); its pods say why it is not. Waiting watches the
object instead of polling, and gives up early on the pod states that never recover by
themselves, instead of sitting out the whole timeout.

A model parked at zero replicas (`scale(handle, 0)`) is "stopped": nothing serves it and
nothing is failing, and it will not come up by itself.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from deployments.base import BackendState
from paddock.errors import BackendError

from .api import KubeApi, ObjectRef
from .scaling import desired_replicas

if TYPE_CHECKING:
    from .workloads import Workload

__all__ = [
    "FATAL_WAITING_REASONS",
    "Verdict",
    "assess",
    "judge_inferenceservice",
    "judge_rollout",
    "pod_problems",
    "wait_ready",
]

log = logging.getLogger(__name__)

FATAL_WAITING_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",  # e.g. the Secret or one of its keys is missing
        "CreateContainerError",
        "RunContainerError",
    }
)
# Waiting reasons of a container that is merely on its way.
_ON_ITS_WAY = frozenset({"", "PodInitializing", "ContainerCreating"})


class Verdict(NamedTuple):
    state: BackendState
    detail: str
    fatal: bool


def _condition_text(cond: dict[str, Any]) -> str:
    return (
        f"{cond.get('type')}={cond.get('status')} {cond.get('reason', '')}: "
        f"{cond.get('message', '')}"
    ).rstrip(": ")


def judge_inferenceservice(obj: dict[str, Any]) -> Verdict:
    """From the object alone: KServe sums its parts up in the `Ready` condition."""
    conditions = (obj.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready and ready.get("status") == "True":
        return Verdict("ready", "Ready", False)
    bad = [_condition_text(c) for c in conditions if c.get("status") != "True"]
    return Verdict("starting", "; ".join(bad) or "no Ready condition yet", False)


def judge_rollout(obj: dict[str, Any]) -> Verdict:
    """From the Deployment alone: ready when the newest generation is rolled out to every
    replica and no old replica is left; fatal when the controller has given up."""
    status = obj.get("status") or {}
    conditions = status.get("conditions") or []
    want = (obj.get("spec") or {}).get("replicas", 1)
    if want is None:
        want = 1
    if want == 0:
        return Verdict("stopped", "scaled to 0 replicas", False)
    ready_n = status.get("readyReplicas") or 0
    updated = status.get("updatedReplicas") or 0
    total = status.get("replicas") or 0
    generation = (obj.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    fresh = generation is None or observed is None or observed >= generation
    detail = f"{ready_n}/{want} replicas ready, {updated}/{want} updated"
    if total > updated:
        detail += f", {total - updated} old replicas still running"
    if not fresh:
        detail += f", rollout of generation {generation} not yet observed"
    fatal = False
    for c in conditions:
        if c.get("type") == "Progressing" and c.get("status") == "False":
            fatal = True  # past progressDeadlineSeconds
        if c.get("type") == "ReplicaFailure" and c.get("status") == "True":
            fatal = True
        if c.get("status") != "True" or c.get("type") == "ReplicaFailure":
            detail += f"; {_condition_text(c)}"
    if fresh and updated >= want and total <= updated and ready_n >= want and want > 0:
        return Verdict("ready", detail, False)
    return Verdict("dead" if fatal else "starting", detail, fatal)


def pod_problems(pods: list[dict[str, Any]]) -> tuple[list[str], bool]:
    """Pod and container states that explain "not ready", and whether any is fatal."""
    notes: list[str] = []
    fatal = False
    for pod in pods:
        pname = pod.get("metadata", {}).get("name", "?")
        status = pod.get("status") or {}
        for cond in status.get("conditions") or []:
            if cond.get("status") == "False" and cond.get("type") == "PodScheduled":
                notes.append(
                    f"pod {pname}: not scheduled: {cond.get('reason', '')}: "
                    f"{cond.get('message', '')}".rstrip(": ")
                )
        groups = (
            ("init container", status.get("initContainerStatuses") or []),
            ("container", status.get("containerStatuses") or []),
        )
        for label, statuses in groups:
            for cs in statuses:
                note, is_fatal = _container_problem(pname, label, cs)
                if note:
                    notes.append(note)
                fatal |= is_fatal
    return notes, fatal


def _container_problem(pname: str, label: str, cs: dict[str, Any]) -> tuple[str, bool]:
    state = cs.get("state") or {}
    cname = cs.get("name", "?")
    restarts = cs.get("restartCount") or 0
    where = f"pod {pname} {label} {cname}"
    if "waiting" in state:
        waiting = state["waiting"] or {}
        reason = waiting.get("reason", "")
        if reason in _ON_ITS_WAY:
            return "", False
        message = f": {waiting['message']}" if waiting.get("message") else ""
        note = f"{where}: waiting: {reason}{message} (restarts {restarts})"
        return note, reason in FATAL_WAITING_REASONS
    if "terminated" in state:
        term = state["terminated"] or {}
        if term.get("exitCode") == 0 and label == "init container":
            return "", False  # done, as it should be
        note = (
            f"{where}: terminated (exit {term.get('exitCode')}): {term.get('reason', '')}: "
            f"{term.get('message', '')}"
        ).rstrip(": ")
        return note, False
    if "running" in state and not cs.get("ready") and label == "container":
        last = (cs.get("lastState") or {}).get("terminated") or {}
        if last:
            note = (
                f"{where}: running, not ready; last exit {last.get('exitCode')} "
                f"{last.get('reason', '')} (restarts {restarts})"
            )
            return note, False
    return "", False


def assess(api: KubeApi, ref: ObjectRef, workload: Workload) -> tuple[BackendState, str]:
    """The state of the workload and a sentence saying why, from its object and pods."""
    obj = api.read(ref)
    if obj is None:
        return "stopped", "it disappeared (it does not exist)"
    state, detail, fatal = workload.judge(obj)
    if state in ("ready", "stopped"):
        return state, detail
    runner = ObjectRef("Deployment", ref.namespace, workload.scale_target(ref.name))
    if runner != ref and desired_replicas(api.read(runner)) == 0:
        return "stopped", f"{runner} is scaled to 0 replicas"
    notes, pods_fatal = pod_problems(api.pods(ref.namespace, ref.name))
    detail += "; " + ("; ".join(notes) if notes else "no pod problems reported")
    return ("dead" if fatal or pods_fatal else "starting"), detail


def wait_ready(
    api: KubeApi,
    ref: ObjectRef,
    workload: Workload,
    *,
    timeout: float,
    poll_interval: float,
    log_tail: Callable[[], str],
) -> None:
    """Return once the workload is ready; raise BackendError (with `log_tail()`) when it
    fails, disappears or is not ready within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        state, detail = assess(api, ref, workload)
        if state == "ready":
            log.info("%s ready: %s", ref, detail)
            return
        if state == "stopped":
            raise BackendError(f"{ref} will not become ready: {detail}")
        if state == "dead":
            raise BackendError(f"{ref} failed to start: {detail}", log_tail=log_tail())
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BackendError(f"{ref} not ready after {timeout:g}s: {detail}", log_tail=log_tail())
        _watch_window(api, ref, workload, min(remaining, poll_interval))


def _watch_window(api: KubeApi, ref: ObjectRef, workload: Workload, seconds: float) -> None:
    """Watch the object for up to `seconds`; return early when an event shows it ready,
    failed or gone. The caller reads the object again and decides: the watch only saves
    polling."""
    with contextlib.closing(api.watch(ref, seconds)) as events:
        for kind, obj in events:
            if kind == "ERROR" or kind == "DELETED":
                return
            state, _, fatal = workload.judge(obj)
            if state in ("ready", "stopped") or fatal:
                return
