"""The Kubernetes serving backend: a submission's vLLM server as Kubernetes objects.

The handle is ``{"namespace", "name", "kind", "endpoint"}``; kind is the watched object's
("Deployment" for a Deployment and a Service both called `name`, or "InferenceService"),
so any process can check, read the logs of, or stop what another one started. `start`
and `stop` are idempotent: starting again patches the objects, stopping again finds
nothing left to delete.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from deployments.base import BackendState, ServeSpec
from paddock.retry import RetryPolicy

from .api import API_RETRY, KubeApi, ObjectRef
from .defaults import DEFAULT_HOME, DEFAULT_IMAGE, DEFAULT_NAMESPACE, DEFAULT_S3_SECRET_NAME
from .readiness import assess, wait_ready
from .render import INIT_CONTAINER, PodSettings, render_manifests
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
        replicas: int = 1,
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
            replicas=int(replicas),
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
        for manifest in manifests:
            self.api.apply(manifest)
        name = manifests[0]["metadata"]["name"]
        service = self.workload.service_name(name)
        endpoint = self.endpoint_host_template.format(name=service, namespace=self.namespace)
        handle = {
            "namespace": self.namespace,
            "name": name,
            "kind": self.workload.kind,
            "endpoint": endpoint.rstrip("/"),
        }
        log.info("started %s %s/%s -> %s", handle["kind"], self.namespace, name, handle["endpoint"])
        return handle

    def stop(self, handle: dict[str, Any]) -> None:
        ref = _ref(handle)
        for kind in workload_of(ref.kind).owned_kinds:
            target = ObjectRef(kind, ref.namespace, ref.name)
            if self.api.delete(target):
                log.info("deleted %s", target)
            else:
                log.info("%s was already gone", target)

    def wait_ready(self, handle: dict[str, Any], *, timeout: float) -> str:
        """Watch until every replica is updated and ready (the readiness probe is
        GET /health), or the InferenceService is Ready. Returns the endpoint."""
        ref = _ref(handle)
        wait_ready(
            self.api,
            ref,
            workload_of(ref.kind),
            timeout=timeout,
            poll_interval=self.poll_interval,
            log_tail=lambda: self.logs(handle),
        )
        return str(handle["endpoint"])

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
