"""The Kubernetes serving backend: a submission's vLLM server as Kubernetes objects.

The handle is ``{"namespace", "name", "kind", "endpoint", "extras", "min_replicas",
"max_replicas"}`` plus ``"ingress"`` (host, path, tls) when the model has one. Kind is
the watched object's ("Deployment" for a Deployment and a Service both called `name`, or
"InferenceService"); extras are the kinds made beside it (an Ingress, an HPA), so any
process can check, read the logs of, scale or stop what another one started with the
handle alone, whatever the serving target says by then. "endpoint" stays the in-cluster
URL; `wait_ready` returns the external one when there is an Ingress.

`start` and `stop` are idempotent: starting again patches the objects (and wakes a parked
model), stopping again finds nothing left to delete.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from deployments.base import BackendState, ServeSpec
from paddock.errors import NotFound
from paddock.retry import RetryPolicy

from .api import API_RETRY, KubeApi, ObjectRef
from .defaults import (
    DEFAULT_HOME,
    DEFAULT_IMAGE,
    DEFAULT_MAX_REPLICAS,
    DEFAULT_MIN_REPLICAS,
    DEFAULT_NAMESPACE,
    DEFAULT_S3_SECRET_NAME,
    DEFAULT_WAITING_PER_REPLICA,
)
from .readiness import assess, wait_ready
from .render import INIT_CONTAINER, PodSettings, render_manifests
from .routing import IngressSettings, Route, wait_routed
from .scaling import ReplicaSettings, check_scale, desired_replicas, wake_replicas
from .secret import SecretKeys
from .workloads import KServeWorkload, PlainWorkload, Workload, workload_of

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

__all__ = ["KubernetesBackend"]

log = logging.getLogger(__name__)


class KubernetesBackend:
    name = "kubernetes"

    def __init__(
        self,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        image: str = DEFAULT_IMAGE,
        gpus: int = 0,
        cpu: str = "4",
        memory: str = "16Gi",
        s3_secret_name: str = DEFAULT_S3_SECRET_NAME,
        kserve: bool = False,
        api_client: ApiClient | None = None,
        endpoint_host_template: str = "http://{name}.{namespace}.svc.cluster.local",
        init_image: str | None = None,
        secret_keys: Mapping[str, str] | None = None,
        home: str = DEFAULT_HOME,
        s3_region: str = "us-east-1",
        default_s3_endpoint: str = "https://s3.amazonaws.com",
        node_selector: Mapping[str, str] | None = None,
        shm_size: str = "2Gi",
        model_dir_size: str = "1Gi",
        startup_timeout: int = 900,
        min_replicas: int = DEFAULT_MIN_REPLICAS,
        max_replicas: int = DEFAULT_MAX_REPLICAS,
        waiting_per_replica: float = DEFAULT_WAITING_PER_REPLICA,
        ingress_host: str | None = None,
        ingress_path_prefix: str | None = None,
        ingress_class: str | None = None,
        ingress_tls_secret: str | None = None,
        ingress_annotations: Mapping[str, str] | None = None,
        retry: RetryPolicy = API_RETRY,
        poll_interval: float = 5.0,
    ) -> None:
        self.settings = PodSettings(
            namespace=namespace,
            image=image,
            init_image=init_image or image,
            gpus=int(gpus),
            cpu=str(cpu),
            memory=str(memory),
            s3_secret_name=s3_secret_name,
            secret_keys=SecretKeys.with_overrides(secret_keys),
            home=home,
            s3_region=s3_region,
            default_s3_endpoint=default_s3_endpoint,
            node_selector=dict(node_selector or {}),
            shm_size=shm_size,
            model_dir_size=model_dir_size,
            startup_timeout=int(startup_timeout),
            replicas=ReplicaSettings(
                min_replicas=int(min_replicas),
                max_replicas=int(max_replicas),
                waiting_per_replica=float(waiting_per_replica),
            ),
            ingress=IngressSettings.build(
                host=ingress_host,
                path_prefix=ingress_path_prefix,
                class_name=ingress_class,
                tls_secret=ingress_tls_secret,
                annotations=ingress_annotations,
            ),
        )
        self.workload: Workload = KServeWorkload() if kserve else PlainWorkload()
        self.endpoint_host_template = endpoint_host_template
        self.poll_interval = float(poll_interval)
        self.api = KubeApi(api_client, retry=retry)

    @property
    def namespace(self) -> str:
        return self.settings.namespace

    def render(self, spec: ServeSpec) -> list[dict[str, Any]]:
        """The manifests `start` applies, in order. Pure: no API calls."""
        return render_manifests(spec, self.settings, self.workload)

    def start(self, spec: ServeSpec) -> dict[str, Any]:
        manifests = self.render(spec)
        workload_kinds = set(self.workload.owned_kinds) | {self.workload.kind}
        for manifest in manifests:
            self.api.apply(manifest)
        name = manifests[0]["metadata"]["name"]
        service = self.workload.service_name(name)
        endpoint = self.endpoint_host_template.format(name=service, namespace=self.namespace)
        handle: dict[str, Any] = {
            "namespace": self.namespace,
            "name": name,
            "kind": self.workload.kind,
            "endpoint": endpoint.rstrip("/"),
            # Deleted first by `stop`: the way in and the autoscaler before the workload.
            "extras": [m["kind"] for m in reversed(manifests) if m["kind"] not in workload_kinds],
            **self.settings.replicas.to_handle(),
        }
        if self.settings.ingress is not None:
            handle["ingress"] = self.settings.ingress.route(name).to_handle()
        self._wake(handle)
        log.info("started %s %s/%s -> %s", handle["kind"], self.namespace, name, handle["endpoint"])
        return handle

    def _wake(self, handle: dict[str, Any]) -> None:
        """Starting a model paddock had parked at zero serves it again. A Deployment with
        a fixed count was woken by applying it; with an HPA (or under KServe) the count is
        not in the manifest, so applying alone would leave it parked."""
        if self.workload.kind == "Deployment" and not self.settings.replicas.autoscaled:
            return
        runner = _runner(handle)
        if desired_replicas(self.api.read(runner)) == 0:
            floor = self.settings.replicas.floor
            self.api.patch(runner, {"spec": {"replicas": floor}})
            log.info("%s was parked at 0 replicas: scaled to %d", runner, floor)

    def stop(self, handle: dict[str, Any]) -> None:
        ref = _ref(handle)
        kinds = [*handle.get("extras", []), *workload_of(ref.kind).owned_kinds]
        for kind in kinds:
            target = ObjectRef(kind, ref.namespace, ref.name)
            if self.api.delete(target):
                log.info("deleted %s", target)
            else:
                log.info("%s was already gone", target)

    def wait_ready(self, handle: dict[str, Any], *, timeout: float) -> str:
        """Watch until every replica is updated and ready (the readiness probe is
        GET /health), or the InferenceService is Ready. Returns the in-cluster endpoint,
        or, for a model with an Ingress, the external URL once `/health` answers
        through it: warm-up, stress and the chat relay then work from outside the
        cluster too."""
        deadline = time.monotonic() + timeout
        ref = _ref(handle)
        wait_ready(
            self.api,
            ref,
            workload_of(ref.kind),
            timeout=timeout,
            poll_interval=self.poll_interval,
            log_tail=lambda: self.logs(handle),
        )
        if not handle.get("ingress"):
            return str(handle["endpoint"])
        return wait_routed(
            self.api,
            ObjectRef("Ingress", ref.namespace, ref.name),
            Route.from_handle(handle["ingress"]),
            timeout=max(0.0, deadline - time.monotonic()),
            interval=min(1.0, self.poll_interval),
        )

    def replicas(self, handle: dict[str, Any]) -> int:
        """The replicas the model's Deployment is set to run now (not how many are
        ready): 0 when it is parked, or gone."""
        return desired_replicas(self.api.read(_runner(handle))) or 0

    def scale(self, handle: dict[str, Any], replicas: int) -> None:
        """Set the model's replicas; 0 parks it (its objects, handle and route stay, so
        `scale(handle, n)` serves it again after the pods start). Within the bounds it
        was deployed with (`min_replicas`..`max_replicas`, else ConfigurationError); with
        an HPA, a count >= 1 is where the HPA resumes from."""
        check_scale(handle, replicas)
        runner = _runner(handle)
        if self.api.patch(runner, {"spec": {"replicas": replicas}}) is None:
            raise NotFound(f"cannot scale {runner}: it does not exist")
        log.info("scaled %s to %d replicas", runner, replicas)

    def parked(self, handle: dict[str, Any]) -> bool:
        """Whether the model's Deployment exists and is set to zero replicas. Unlike
        `replicas() == 0`, a Deployment that is gone (or that KServe has not made yet) is
        not parked: there is nothing to wake."""
        return desired_replicas(self.api.read(_runner(handle))) == 0

    def wake(self, handle: dict[str, Any]) -> int | None:
        """Scale a parked model back to its floor; returns the replicas asked for, or None
        when it was not parked (already woken, or gone). The HPA, if any, takes over from
        there. Callers that may race (several API processes) decide who wakes first: two
        wakes are harmless, but each is an API write and a log line."""
        if not self.parked(handle):
            return None
        replicas = wake_replicas(handle)
        self.scale(handle, replicas)
        return replicas

    def status(self, handle: dict[str, Any]) -> BackendState:
        ref = _ref(handle)
        return assess(self.api, ref, workload_of(ref.kind))[0]

    def logs(self, handle: dict[str, Any], *, lines: int = 40) -> str:
        """The newest pod's vLLM log tail, or its init container's if that failed;
        "" when there is no pod or the log cannot be read."""
        ref = _ref(handle)
        try:
            pods = self.api.pods(ref.namespace, ref.name)
            if not pods:
                return ""
            pod = pods[0]
            container = workload_of(ref.kind).container
            for cs in (pod.get("status") or {}).get("initContainerStatuses") or []:
                terminated = (cs.get("state") or {}).get("terminated") or {}
                if cs.get("name") == INIT_CONTAINER and terminated.get("exitCode") != 0:
                    container = INIT_CONTAINER
            return self.api.pod_log(ref.namespace, pod["metadata"]["name"], container, lines=lines)
        except Exception as exc:  # best effort by contract
            log.debug("no logs for %s: %s", ref, exc)
            return ""


def _ref(handle: dict[str, Any]) -> ObjectRef:
    return ObjectRef(handle.get("kind", "Deployment"), handle["namespace"], handle["name"])


def _runner(handle: dict[str, Any]) -> ObjectRef:
    """The Deployment that runs the model's pods, whose replicas are scaled."""
    ref = _ref(handle)
    return ObjectRef("Deployment", ref.namespace, workload_of(ref.kind).scale_target(ref.name))
