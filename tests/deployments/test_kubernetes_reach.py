"""Reaching and scaling a model on Kubernetes: the Ingress, the HPA on vLLM's queue, and
`scale` / `replicas` — rendered and validated offline, then run against kmock.

kmock reconciles nothing, so the tests play the controllers: they publish the Ingress's
address in its status, and a local HTTP server stands in for the ingress controller.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from kubernetes import client

from deployments.kubernetes import QUEUE_METRIC, KubernetesBackend, resource_name
from deployments.kubernetes.routing import Route, external_url
from deployments.local import LocalBackend
from paddock.errors import BackendError, ConfigurationError, NotFound
from tests.deployments.kube import FAST_RETRY, NS, KmockThread, make_spec, mark_ready
from tests.deployments.manifests import validate_manifests

NAME = resource_name(make_spec().submission_id)
ROUTED = {"ingress_path_prefix": "/models", "ingress_class": "nginx"}
AUTOSCALED = {"min_replicas": 0, "max_replicas": 3}


def on_kmock(api_client: client.ApiClient, **options: Any) -> KubernetesBackend:
    return KubernetesBackend(
        namespace=NS, api_client=api_client, retry=FAST_RETRY, poll_interval=0.2, **options
    )


def by_kind(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["kind"]: m for m in manifests}


def vllm_args(manifest: dict[str, Any]) -> list[str]:
    pod = (
        manifest["spec"]["template"]["spec"]
        if manifest["kind"] == "Deployment"
        else manifest["spec"]["predictor"]
    )
    args: list[str] = pod["containers"][0]["args"]
    return args


# --------------------------------------------------------------------------- rendering


VARIANTS: dict[str, dict[str, Any]] = {
    "host-per-model": {"ingress_host": "{name}.models.example.com", "ingress_tls_secret": "wild"},
    "path-prefix": {**ROUTED, **AUTOSCALED},
    "shared-host-and-path": {
        "ingress_host": "llm.example.com",
        "ingress_path_prefix": "/models/",
        "ingress_annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"},
        "min_replicas": 2,
        "max_replicas": 6,
        "waiting_per_replica": 0.5,
    },
}


@pytest.mark.parametrize("kserve", [False, True])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("version", ["1.29.0", kubernetes_validate.latest_version()])
def test_ingress_and_autoscaler_validate_strictly(kserve: bool, variant: str, version: str) -> None:
    backend = KubernetesBackend(namespace=NS, kserve=kserve, **VARIANTS[variant])
    manifests = backend.render(make_spec())
    kinds = [m["kind"] for m in manifests]
    workload = ["InferenceService"] if kserve else ["Deployment", "Service"]
    extras = ["HorizontalPodAutoscaler"] if backend.settings.replicas.autoscaled else []
    assert kinds == [*workload, *extras, "Ingress"]  # applied after what they point at
    for manifest in manifests[len(workload) :]:
        kubernetes_validate.validate(manifest, version, strict=True)
    assert len(validate_manifests(manifests, version)) == len(manifests)


@pytest.mark.parametrize("kserve", [False, True])
def test_path_routing_forwards_the_prefix_that_vllm_serves_under(kserve: bool) -> None:
    backend = KubernetesBackend(namespace=NS, kserve=kserve, **ROUTED)
    manifests = by_kind(backend.render(make_spec()))
    ingress = manifests["Ingress"]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert "tls" not in ingress["spec"]
    (rule,) = ingress["spec"]["rules"]
    assert "host" not in rule  # any host the controller answers on
    (path,) = rule["http"]["paths"]
    assert path["path"] == f"/models/{NAME}" and path["pathType"] == "Prefix"
    service = f"{NAME}-predictor" if kserve else NAME
    assert path["backend"] == {"service": {"name": service, "port": {"number": 80}}}
    if not kserve:
        assert manifests["Service"]["spec"]["ports"][0]["port"] == 80
    if kserve:  # KServe would otherwise make an Ingress of the same name itself
        labels = manifests["InferenceService"]["metadata"]["labels"]
        assert labels["networking.kserve.io/visibility"] == "cluster-local"
        plain = KubernetesBackend(namespace=NS, kserve=True).render(make_spec())[0]
        assert "networking.kserve.io/visibility" not in plain["metadata"]["labels"]
    args = vllm_args(manifests["InferenceService" if kserve else "Deployment"])
    assert args[args.index("--root-path") + 1] == f"/models/{NAME}"
    # no rewrite annotation: the path reaches vLLM unchanged
    assert not any("rewrite" in key for key in ingress["metadata"]["annotations"])
    assert ingress["metadata"]["annotations"]["paddock.dev/submission-id"] == (
        make_spec().submission_id
    )


def test_host_routing_gives_each_model_its_host_and_tls() -> None:
    backend = KubernetesBackend(namespace=NS, **VARIANTS["host-per-model"])
    manifests = by_kind(backend.render(make_spec()))
    spec = manifests["Ingress"]["spec"]
    host = f"{NAME}.models.example.com"
    assert spec["tls"] == [{"hosts": [host], "secretName": "wild"}]
    assert spec["rules"][0]["host"] == host
    assert spec["rules"][0]["http"]["paths"][0]["path"] == "/"
    assert "ingressClassName" not in spec  # the cluster's default class
    assert "--root-path" not in vllm_args(manifests["Deployment"])
    assert "HorizontalPodAutoscaler" not in manifests  # max_replicas 1: a fixed count
    assert manifests["Deployment"]["spec"]["replicas"] == 1
    assert backend.settings.ingress is not None
    assert backend.settings.ingress.route(NAME) == Route(host=host, path="/", tls=True)


def test_shared_host_routes_by_path_and_keeps_operator_annotations() -> None:
    backend = KubernetesBackend(namespace=NS, **VARIANTS["shared-host-and-path"])
    ingress = by_kind(backend.render(make_spec()))["Ingress"]
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "llm.example.com"
    assert rule["http"]["paths"][0]["path"] == f"/models/{NAME}"  # trailing '/' dropped
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ingress_host": "llm.example.com"}, "same for every model"),
        ({"ingress_path_prefix": "/m", "ingress_tls_secret": "s"}, "TLS is per host"),
        ({"ingress_host": "https://{name}.example.com"}, "not a DNS name"),
        ({"ingress_host": "{name}.Example.com"}, "not a DNS name"),
        ({"ingress_path_prefix": "/models?x=1"}, "URL path"),
        ({"ingress_class": "nginx"}, "need ingress_host or ingress_path_prefix"),
        ({"min_replicas": 3, "max_replicas": 2}, "min_replicas <= max_replicas"),
        ({"max_replicas": 0}, "max_replicas >= 1"),
        ({"max_replicas": 2, "waiting_per_replica": 0}, "waiting_per_replica must be > 0"),
    ],
)
def test_inconsistent_settings_are_refused_when_the_backend_is_built(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        KubernetesBackend(namespace=NS, **options)


@pytest.mark.parametrize("kserve", [False, True])
def test_autoscaler_scales_the_deployment_on_the_queue_and_never_to_zero(kserve: bool) -> None:
    backend = KubernetesBackend(namespace=NS, kserve=kserve, **AUTOSCALED)
    manifests = by_kind(backend.render(make_spec()))
    hpa = manifests["HorizontalPodAutoscaler"]["spec"]
    runner = f"{NAME}-predictor" if kserve else NAME
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": runner}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 3)  # min_replicas 0 -> HPA's 1
    (metric,) = hpa["metrics"]
    assert metric == {
        "type": "Pods",
        "pods": {
            "metric": {"name": QUEUE_METRIC},
            "target": {"type": "AverageValue", "averageValue": "2"},
        },
    }
    assert QUEUE_METRIC == "vllm_num_requests_waiting"
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    if kserve:
        isvc = manifests["InferenceService"]
        assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "external"
        predictor = isvc["spec"]["predictor"]
        assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 3)
    else:
        # the HPA owns the count: applying the manifest again must not reset it
        assert "replicas" not in manifests["Deployment"]["spec"]
    fractional = KubernetesBackend(namespace=NS, max_replicas=2, waiting_per_replica=0.5)
    hpa = by_kind(fractional.render(make_spec()))["HorizontalPodAutoscaler"]["spec"]
    assert hpa["metrics"][0]["pods"]["target"]["averageValue"] == "500m"


def test_fixed_replicas_without_an_autoscaler() -> None:
    backend = KubernetesBackend(namespace=NS, min_replicas=2, max_replicas=2)
    manifests = by_kind(backend.render(make_spec()))
    assert manifests["Deployment"]["spec"]["replicas"] == 2
    assert set(manifests) == {"Deployment", "Service"}


def test_serving_target_block_passes_its_settings_and_shares_defaults(tmp_path: Path) -> None:
    from blocks.serving import ServingTarget

    default = ServingTarget(backend="kubernetes").open(log_dir=tmp_path)
    assert isinstance(default, KubernetesBackend)
    assert default.settings.replicas == KubernetesBackend().settings.replicas
    assert default.settings.ingress is None
    target = ServingTarget(
        backend="kubernetes",
        ingress_host="{name}.models.example.com",
        ingress_class="nginx",
        ingress_tls_secret="wild",
        ingress_annotations={"a": "b"},
        min_replicas=0,
        max_replicas=4,
        waiting_per_replica=3,
    )
    backend = target.open(log_dir=tmp_path)
    assert isinstance(backend, KubernetesBackend)
    ingress = backend.settings.ingress
    assert ingress is not None
    assert (ingress.host, ingress.class_name, ingress.tls_secret) == (
        "{name}.models.example.com",
        "nginx",
        "wild",
    )
    assert dict(ingress.annotations) == {"a": "b"}
    replicas = backend.settings.replicas
    assert (replicas.min_replicas, replicas.max_replicas, replicas.waiting_per_replica) == (0, 4, 3)


@pytest.mark.parametrize(
    ("route", "status", "url"),
    [
        (Route("m.example.com", "/", True), {}, "https://m.example.com"),
        (Route("llm.example.com", "/models/m", False), {}, "http://llm.example.com/models/m"),
        (Route(None, "/models/m", False), {}, None),  # no address published yet
        (Route(None, "/models/m", False), {"ip": "203.0.113.7"}, "http://203.0.113.7/models/m"),
        (
            Route(None, "/models/m", False),
            {"ip": "203.0.113.7", "hostname": "lb.example.net", "ports": [{"port": 80}]},
            "http://lb.example.net/models/m",
        ),
        (
            Route(None, "/m", False),
            {"ip": "2001:db8::1", "ports": [{"port": 8080}]},
            "http://[2001:db8::1]:8080/m",
        ),
    ],
)
def test_external_url(route: Route, status: dict[str, Any], url: str | None) -> None:
    ingress = {"status": {"loadBalancer": {"ingress": [status] if status else []}}}
    assert external_url(route, ingress) == url


# --------------------------------------------------------------------------- against kmock


class FakeController:
    """Stands in for an ingress controller: answers `<path>/health` with 404 until it has
    "programmed" the route (after `programmed_after` requests), then with 200."""

    def __init__(self, path: str, *, programmed_after: int = 2) -> None:
        self.requests: list[str] = []
        controller = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                controller.requests.append(self.path)
                routed = len(controller.requests) > programmed_after
                ok = routed and self.path == f"{path}/health"
                self.send_response(200 if ok else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeController:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def controller() -> Iterator[FakeController]:
    with FakeController(f"/models/{NAME}") as fake:
        yield fake


def publish_address(api_client: client.ApiClient, name: str, port: int) -> None:
    """Play the ingress controller: publish the address the Ingress is reached at."""
    client.NetworkingV1Api(api_client).patch_namespaced_ingress_status(
        name,
        NS,
        {
            "status": {
                "loadBalancer": {
                    "ingress": [{"ip": "127.0.0.1", "ports": [{"port": port, "protocol": "TCP"}]}]
                }
            }
        },
    )


def test_start_applies_ingress_and_autoscaler_and_stop_removes_them(
    api_client: client.ApiClient, k8s: KmockThread
) -> None:
    backend = on_kmock(api_client, **ROUTED, **AUTOSCALED)
    handle = backend.start(make_spec())
    assert handle["extras"] == ["Ingress", "HorizontalPodAutoscaler"]
    assert handle["ingress"] == {"host": None, "path": f"/models/{NAME}", "tls": False}
    assert (handle["min_replicas"], handle["max_replicas"]) == (0, 3)
    assert handle["endpoint"] == f"http://{NAME}.{NS}.svc.cluster.local"  # in-cluster, as before
    ingress = client.NetworkingV1Api(api_client).read_namespaced_ingress(NAME, NS)
    assert ingress.spec.rules[0].http.paths[0].backend.service.name == NAME
    hpa = client.AutoscalingV2Api(api_client).read_namespaced_horizontal_pod_autoscaler(NAME, NS)
    assert hpa.spec.metrics[0].pods.metric.name == QUEUE_METRIC
    assert backend.start(make_spec()) == handle  # again: 409 -> merge patch, for every kind
    for plural in ("ingresses", "horizontalpodautoscalers"):
        assert k8s.requests("PATCH", rf"/apis/[^/]+/v[0-9]+/namespaces/{NS}/{plural}/{NAME}")
    backend.stop(handle)
    for read in (
        client.NetworkingV1Api(api_client).read_namespaced_ingress,
        client.AutoscalingV2Api(api_client).read_namespaced_horizontal_pod_autoscaler,
        client.AppsV1Api(api_client).read_namespaced_deployment,
        client.CoreV1Api(api_client).read_namespaced_service,
    ):
        with pytest.raises(client.ApiException) as err:
            read(NAME, NS)
        assert err.value.status == 404
    # the way in goes first, the workload last
    deletes = [r.url.path.rsplit("/", 2)[-2] for r in k8s.requests("DELETE", rf"/.*/{NAME}")]
    assert deletes == ["ingresses", "horizontalpodautoscalers", "services", "deployments"]
    KubernetesBackend(namespace=NS, api_client=api_client, retry=FAST_RETRY).stop(handle)


def test_wait_ready_returns_the_external_url_once_the_route_answers(
    api_client: client.ApiClient, controller: FakeController
) -> None:
    backend = on_kmock(api_client, **ROUTED)
    handle = backend.start(make_spec())
    mark_ready(api_client, NAME, delay=0.2)
    threading.Timer(0.4, publish_address, (api_client, NAME, controller.port)).start()
    url = backend.wait_ready(handle, timeout=10)
    assert url == f"http://127.0.0.1:{controller.port}/models/{NAME}"
    # 404s while the controller programmed the route, then 200: waited for, not returned
    assert controller.requests[-1] == f"/models/{NAME}/health"
    assert len(controller.requests) == 3


def test_wait_ready_says_why_the_route_does_not_answer(api_client: client.ApiClient) -> None:
    backend = on_kmock(api_client, **ROUTED)
    handle = backend.start(make_spec())
    mark_ready(api_client, NAME).join()
    with pytest.raises(BackendError, match=r"does not reach the model after [\d.]+s: .*address"):
        backend.wait_ready(handle, timeout=1)
    with FakeController("/elsewhere", programmed_after=0) as misrouted:
        publish_address(api_client, NAME, misrouted.port)
        with pytest.raises(BackendError, match=rf"/models/{NAME}/health answered 404"):
            backend.wait_ready(handle, timeout=1)
        assert misrouted.requests and set(misrouted.requests) == {f"/models/{NAME}/health"}


def test_scale_parks_and_wakes_a_model_under_its_autoscaler(
    api_client: client.ApiClient, k8s: KmockThread
) -> None:
    backend = on_kmock(api_client, **AUTOSCALED)
    handle = backend.start(make_spec())
    apps = client.AppsV1Api(api_client)
    assert backend.replicas(handle) == 1  # no count in the manifest: the API's default
    backend.scale(handle, 0)
    assert apps.read_namespaced_deployment(NAME, NS).spec.replicas == 0
    assert backend.replicas(handle) == 0
    assert backend.status(handle) == "stopped"
    with pytest.raises(BackendError, match="will not become ready: scaled to 0 replicas"):
        backend.wait_ready(handle, timeout=5)
    patches = k8s.requests("PATCH", rf"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}")
    assert patches[-1].headers["Content-Type"].startswith("application/merge-patch+json")
    # starting it again serves it again, though the manifest carries no count
    backend.start(make_spec())
    assert backend.replicas(handle) == 1
    backend.scale(handle, 3)
    assert backend.replicas(handle) == 3
    with pytest.raises(ConfigurationError, match="at most 3"):
        backend.scale(handle, 4)
    for bad in (-1, True, 1.5):
        with pytest.raises(ConfigurationError, match="whole number"):
            backend.scale(handle, bad)  # type: ignore[arg-type]


def test_scale_keeps_the_floor_the_target_set(api_client: client.ApiClient) -> None:
    backend = on_kmock(api_client)  # min_replicas 1: paddock never parks these
    handle = backend.start(make_spec())
    with pytest.raises(ConfigurationError, match="keeps at least 1"):
        backend.scale(handle, 0)
    backend.stop(handle)
    with pytest.raises(NotFound, match="does not exist"):
        backend.scale(handle, 1)
    assert backend.replicas(handle) == 0


def test_scale_is_retried_through_a_passing_fault(
    api_client: client.ApiClient, k8s: KmockThread
) -> None:
    backend = on_kmock(api_client, min_replicas=0)
    handle = backend.start(make_spec())
    item = rf"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}"
    k8s.on_loop(lambda: k8s.emulator["patch", re.compile(item)][:1] << 503)
    backend.scale(handle, 0)
    assert len(k8s.requests("PATCH", item)) == 2
    assert backend.replicas(handle) == 0


def test_kserve_scales_the_predictor_deployment(api_client: client.ApiClient) -> None:
    backend = on_kmock(api_client, kserve=True, **AUTOSCALED)
    handle = backend.start(make_spec())
    assert handle["extras"] == ["HorizontalPodAutoscaler"]
    assert backend.replicas(handle) == 0  # KServe has not made its Deployment yet
    predictor = by_kind(KubernetesBackend(namespace=NS).render(make_spec()))["Deployment"]
    predictor["metadata"]["name"] = f"{NAME}-predictor"  # play KServe
    client.AppsV1Api(api_client).create_namespaced_deployment(NS, predictor)
    backend.scale(handle, 0)
    assert backend.replicas(handle) == 0
    # the InferenceService is not Ready; its Deployment says why: parked
    assert backend.status(handle) == "stopped"
    with pytest.raises(BackendError, match=rf"Deployment {NS}/{NAME}-predictor is scaled to 0"):
        backend.wait_ready(handle, timeout=5)
    backend.start(make_spec())  # wakes it
    assert backend.replicas(handle) == 1


def test_a_handle_from_before_ingress_and_autoscaling_still_works(
    api_client: client.ApiClient,
) -> None:
    backend = on_kmock(api_client)
    handle = backend.start(make_spec())
    old = {k: handle[k] for k in ("namespace", "name", "kind", "endpoint")}
    backend.scale(old, 0)  # no recorded floor: any count >= 0
    assert backend.replicas(old) == 0
    backend.stop(old)
    assert backend.status(old) == "stopped"


def test_the_local_backend_refuses_to_scale(tmp_path: Path) -> None:
    local = LocalBackend(log_dir=tmp_path)
    handle = {"pid": 2**22 + 1, "pgid": 2**22 + 1, "served_name": "smol", "log_path": "x"}
    assert local.replicas(handle) == 0  # not running
    with pytest.raises(ConfigurationError, match="cannot scale smol .*stop it instead"):
        local.scale(handle, 0)
