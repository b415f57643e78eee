"""The Kubernetes backend: rendering, validated offline, and its lifecycle against kmock's
KubernetesEmulator over real HTTP (machinery in `kube.py`, fixtures in `conftest.py`).
Ingress, autoscaling and scaling are in `test_kubernetes_reach.py`.
"""

from __future__ import annotations

import json
import posixpath
import re
import threading
import time
from typing import Any

import jinja2
import jinja2.meta
import kubernetes_validate
import pytest
import yaml
from kubernetes import client

from deployments.base import get_backend
from deployments.kubernetes import (
    DEFAULT_HOME,
    DEFAULT_IMAGE,
    DEFAULT_NAMESPACE,
    DEFAULT_S3_SECRET_NAME,
    KubernetesBackend,
    resource_name,
    s3_secret_manifest,
)
from deployments.kubernetes.render import TEMPLATES_DIR, RenderContext
from paddock.errors import BackendError
from paddock.retry import RetryPolicy
from tests.deployments.kube import (
    FAST_RETRY,
    NS,
    SECRET_VALUES,
    KmockThread,
    add_pod,
    make_spec,
    mark_ready,
)
from tests.deployments.manifests import validate_manifests

# --------------------------------------------------------------------------- rendering


VARIANTS = {
    "cpu": {},
    "gpu": {"gpus": 1},
    "multi-gpu": {"gpus": 4, "node_selector": {"nvidia.com/gpu.product": "A100"}},
    "kserve-cpu": {"kserve": True},
    "kserve-gpu": {"kserve": True, "gpus": 2},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("version", ["1.29.0", kubernetes_validate.latest_version()])
def test_every_rendered_manifest_validates_strictly(variant: str, version: str) -> None:
    backend = KubernetesBackend(namespace=NS, **VARIANTS[variant])
    manifests = backend.render(make_spec())
    kinds = [m["kind"] for m in manifests]
    if VARIANTS[variant].get("kserve"):
        assert kinds == ["InferenceService"]
    else:
        assert kinds == ["Deployment", "Service"]
        for manifest in manifests:  # the tool itself, strictly (unknown fields rejected)
            kubernetes_validate.validate(manifest, version, strict=True)
    # kubernetes-validate has no schema for the KServe CRD: validate_manifests checks its
    # shape by hand and validates the predictor's pod part as a v1 Pod spec.
    assert len(validate_manifests(manifests, version)) == len(manifests)


def test_strict_validation_would_catch_a_bad_field() -> None:
    deployment = KubernetesBackend(namespace=NS).render(make_spec())[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["startupProbes"] = {}
    with pytest.raises(kubernetes_validate.utils.ValidationError):
        kubernetes_validate.validate(deployment, "1.37.0", strict=True)
    isvc = KubernetesBackend(namespace=NS, kserve=True).render(make_spec())[0]
    isvc["spec"]["predictor"]["containers"][0]["name"] = "vllm"
    with pytest.raises(ValueError, match="kserve-container"):
        validate_manifests([isvc])
    isvc = KubernetesBackend(namespace=NS, kserve=True).render(make_spec())[0]
    isvc["spec"]["predictor"]["volumes"][0]["emptyDir"]["bogus"] = 1
    with pytest.raises(kubernetes_validate.utils.ValidationError):
        validate_manifests([isvc])


def container_of(manifest: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = (
        manifest["spec"]["template"]["spec"]
        if manifest["kind"] == "Deployment"
        else manifest["spec"]["predictor"]
    )
    return pod, pod["containers"][0]


@pytest.mark.parametrize("kserve", [False, True])
def test_rendered_pod_runs_vllm_from_s3_with_secret_references(kserve: bool) -> None:
    backend = KubernetesBackend(
        namespace=NS,
        image="registry.example/paddock-serving:1",
        kserve=kserve,
        s3_secret_name="models-s3",
    )
    manifests = backend.render(make_spec())
    text = yaml.safe_dump_all(manifests) + json.dumps(manifests)
    for value in SECRET_VALUES:
        assert value not in text
    pod, vllm = container_of(manifests[0])
    assert vllm["name"] == ("kserve-container" if kserve else "vllm")
    assert vllm["image"] == "registry.example/paddock-serving:1"
    assert vllm["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    args = vllm["args"]

    def arg(flag: str) -> str:
        return args[args.index(flag) + 1]

    assert arg("--model") == "/model"
    assert arg("--load-format") == "tensorizer"
    assert json.loads(arg("--model-loader-extra-config")) == {
        "tensorizer_uri": "s3://paddock-models/bundles/sha256-abc/model.tensors",
        "s3_endpoint": "http://minio.storage:9000",
        "stream_kwargs": {"force_http": True},
    }
    assert (arg("--served-model-name"), arg("--dtype"), arg("--max-model-len")) == (
        "tiny-llama",
        "float32",
        "1024",
    )
    assert "--enforce-eager" in args  # CPU
    assert json.loads(arg("--override-generation-config")) == {"temperature": 0.7, "top_k": 40}
    env_names = {e["name"] for e in vllm["env"]}
    assert "VLLM_LOGGING_LEVEL" in env_names
    assert not env_names & {"S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"}
    for probe in ("startupProbe", "readinessProbe"):
        assert vllm[probe]["httpGet"] == {"path": "/health", "port": 8000}
    startup = vllm["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert vllm["ports"][0]["containerPort"] == 8000
    # ~/.s3cfg for tensorizer, from the Secret
    mount = next(m for m in vllm["volumeMounts"] if m["name"] == "s3cfg")
    assert mount["mountPath"] == f"{DEFAULT_HOME}/.s3cfg" and mount["subPath"] == ".s3cfg"
    volume = next(v for v in pod["volumes"] if v["name"] == "s3cfg")
    assert volume["secret"]["secretName"] == "models-s3"
    assert volume["secret"]["items"] == [{"key": "s3cfg", "path": ".s3cfg"}]
    # the init container copies the small files into the shared /model emptyDir
    init = pod["initContainers"][0]
    assert init["command"][-4:] == [
        "/model",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert init["command"][3:5] == ["paddock-models", "bundles/sha256-abc/"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in init["env"] if "valueFrom" in e}
    assert refs == {
        "AWS_ACCESS_KEY_ID": {"name": "models-s3", "key": "access_key_id"},
        "AWS_SECRET_ACCESS_KEY": {"name": "models-s3", "key": "secret_access_key"},
    }
    assert all(
        "value" not in e
        for e in init["env"]
        if e["name"].startswith("AWS_") and e["name"] != "AWS_DEFAULT_REGION"
    )
    assert {m["mountPath"] for m in init["volumeMounts"]} == {"/model"}
    assert next(v for v in pod["volumes"] if v["name"] == "model")["emptyDir"]
    assert "nvidia.com/gpu" not in vllm["resources"]["limits"]
    assert vllm["resources"]["requests"] == {"cpu": "4", "memory": "16Gi"}


@pytest.mark.parametrize("kserve", [False, True])
@pytest.mark.parametrize("home", [None, "/srv/vllm/"])
def test_s3cfg_is_mounted_in_the_home_the_pod_sets(kserve: bool, home: str | None) -> None:
    options: dict[str, Any] = {"home": home} if home else {}
    backend = KubernetesBackend(namespace=NS, kserve=kserve, **options)
    spec = make_spec(env={"HOME": "/root", "VLLM_LOGGING_LEVEL": "INFO"})
    _, vllm = container_of(backend.render(spec)[0])
    homes = [e["value"] for e in vllm["env"] if e["name"] == "HOME"]
    assert homes == [posixpath.normpath(home or DEFAULT_HOME)]  # the pod's, not the spec's
    mount = next(m for m in vllm["volumeMounts"] if m["name"] == "s3cfg")
    assert mount["mountPath"] == posixpath.join(homes[0], ".s3cfg")
    with pytest.raises(ValueError, match="absolute"):
        KubernetesBackend(home="vllm")


def test_render_context_has_exactly_the_fields_the_templates_use() -> None:
    env = jinja2.Environment()
    env.globals.clear()  # else `namespace`, a jinja global, would not count as used
    used: set[str] = set()
    for template in TEMPLATES_DIR.glob("*.j2"):
        used |= jinja2.meta.find_undeclared_variables(env.parse(template.read_text()))
    assert used == set(RenderContext.__dataclass_fields__)


def test_defaults_agree_with_the_serving_target_block() -> None:
    from blocks.serving import ServingTarget

    target = ServingTarget()
    backend = KubernetesBackend()
    assert (target.namespace, target.s3_secret_name) == (DEFAULT_NAMESPACE, DEFAULT_S3_SECRET_NAME)
    assert backend.settings.namespace == DEFAULT_NAMESPACE
    assert backend.settings.s3_secret_name == DEFAULT_S3_SECRET_NAME
    assert backend.settings.image == (target.image or DEFAULT_IMAGE)
    replicas = backend.settings.replicas
    assert (target.min_replicas, target.max_replicas, target.waiting_per_replica) == (
        replicas.min_replicas,
        replicas.max_replicas,
        replicas.waiting_per_replica,
    )
    assert target.ingress_host is target.ingress_path_prefix is backend.settings.ingress is None


def test_gpu_resources_labels_and_names() -> None:
    backend = KubernetesBackend(namespace=NS, gpus=2, cpu="8", memory="48Gi")
    deployment, service = backend.render(make_spec("Sub_42/X"))
    pod, vllm = container_of(deployment)
    assert vllm["resources"]["limits"] == {"cpu": "8", "memory": "48Gi", "nvidia.com/gpu": 2}
    assert vllm["resources"]["requests"]["nvidia.com/gpu"] == 2
    assert vllm["args"][vllm["args"].index("--tensor-parallel-size") + 1] == "2"
    assert "--enforce-eager" not in vllm["args"]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    name = deployment["metadata"]["name"]
    assert name == service["metadata"]["name"] == resource_name("Sub_42/X")
    assert re.fullmatch(r"paddock-sub-42-x-[0-9a-f]{8}", name)  # lossy -> hashed
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "paddock-model"
    assert re.fullmatch(r"Sub_42-X-[0-9a-f]{8}", labels["paddock.dev/submission"])
    assert deployment["metadata"]["annotations"]["paddock.dev/submission-id"] == "Sub_42/X"
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items() and service["spec"]["selector"] == selector
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": 8000, "protocol": "TCP"}
    ]
    assert resource_name("abc") == "paddock-abc"
    long_name = resource_name("x" * 200)
    assert len(long_name) <= 45 and long_name != resource_name("x" * 201)
    for sid in ("UPPER", "a.b", "-", "日本"):
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", resource_name(sid))


def test_render_refuses_a_local_bundle() -> None:
    with pytest.raises(BackendError, match="needs the bundle in S3"):
        KubernetesBackend().render(make_spec(bundle_uri="/var/paddock/bundles/abc"))


def test_secret_helper_layout_matches_the_references() -> None:
    secret = s3_secret_manifest("paddock-s3", NS, *SECRET_VALUES)
    kubernetes_validate.validate(secret, "1.37.0", strict=True)
    assert set(secret["data"]) == {"access_key_id", "secret_access_key", "s3cfg"}


def test_get_backend_builds_it() -> None:
    backend = get_backend("kubernetes", namespace=NS, gpus=1)
    assert isinstance(backend, KubernetesBackend) and backend.name == "kubernetes"


# --------------------------------------------------------------------------- against kmock


def test_start_creates_deployment_and_service(
    backend: KubernetesBackend, k8s: KmockThread, api_client: client.ApiClient
) -> None:
    handle = backend.start(make_spec())
    name = resource_name(make_spec().submission_id)
    assert handle == {
        "namespace": NS,
        "name": name,
        "kind": "Deployment",
        "endpoint": f"http://{name}.{NS}.svc.cluster.local",
        "extras": [],  # no Ingress, no HPA unless the target asks for them
        "min_replicas": 1,
        "max_replicas": 1,
    }
    deployment = client.AppsV1Api(api_client).read_namespaced_deployment(name, NS)
    service = client.CoreV1Api(api_client).read_namespaced_service(name, NS)
    vllm = deployment.spec.template.spec.containers[0]
    assert vllm.image == DEFAULT_IMAGE
    assert vllm.startup_probe.http_get.path == "/health"
    assert vllm.readiness_probe.http_get.path == "/health"
    assert deployment.metadata.labels["paddock.dev/submission"] == make_spec().submission_id
    secret_volume = next(v for v in deployment.spec.template.spec.volumes if v.name == "s3cfg")
    assert secret_volume.secret.secret_name == DEFAULT_S3_SECRET_NAME
    assert service.spec.ports[0].port == 80 and service.spec.ports[0].target_port == 8000
    stored = k8s.on_loop(lambda: json.dumps([obj.raw for obj in k8s.emulator.objects.values()]))
    assert stored.count('"kind": "Deployment"') == 1 and stored.count('"kind": "Service"') == 1
    for value in SECRET_VALUES:  # nothing secret went over the wire either
        assert value not in stored
    assert backend.status(handle) == "starting"
    assert backend.logs(handle) == ""  # no pod yet: best effort, empty


def test_wait_ready_follows_the_watch(
    backend: KubernetesBackend, api_client: client.ApiClient, k8s: KmockThread
) -> None:
    backend.poll_interval = 5.0  # readiness must come from the watch, not from polling
    handle = backend.start(make_spec())
    mark_ready(api_client, handle["name"], delay=0.4)
    t0 = time.monotonic()
    assert backend.wait_ready(handle, timeout=10) == handle["endpoint"]
    assert 0.3 < time.monotonic() - t0 < 3
    assert k8s.requests("GET", rf"/apis/apps/v1/namespaces/{NS}/deployments")  # the watch
    assert backend.status(handle) == "ready"


def test_wait_ready_times_out_naming_what_is_not_ready(
    backend: KubernetesBackend, api_client: client.ApiClient, k8s: KmockThread
) -> None:
    handle = backend.start(make_spec())
    name = handle["name"]
    add_pod(
        api_client,
        name,
        f"{name}-abc12",
        {
            "phase": "Running",
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "initContainerStatuses": [
                {
                    "name": "fetch-config",
                    "ready": False,
                    "restartCount": 0,
                    "image": DEFAULT_IMAGE,
                    "imageID": "",
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                }
            ],
            "containerStatuses": [
                {
                    "name": "vllm",
                    "ready": False,
                    "restartCount": 1,
                    "image": DEFAULT_IMAGE,
                    "imageID": "",
                    "state": {"running": {}},
                    "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
                }
            ],
        },
    )
    k8s.on_loop(
        lambda: (
            k8s.emulator["get", re.compile(rf"/api/v1/namespaces/{NS}/pods/[^/]+/log")]
            << {"Content-Type": "text/plain"}
            << b"INFO loading tensors\nERROR out of memory\n"
        )
    )
    t0 = time.monotonic()
    with pytest.raises(BackendError) as err:
        backend.wait_ready(handle, timeout=1.0)
    assert 0.9 < time.monotonic() - t0 < 4
    message = str(err.value)
    assert f"Deployment {NS}/{name} not ready after 1s" in message
    assert "0/1 replicas ready" in message
    assert "container vllm: running, not ready; last exit 137 OOMKilled" in message
    assert "ERROR out of memory" in err.value.log_tail
    assert "ERROR out of memory" in backend.logs(handle)
    log_reads = k8s.requests("GET", rf"/api/v1/namespaces/{NS}/pods/{name}-abc12/log")
    assert log_reads and log_reads[-1].params.get("container") == "vllm"


def test_wait_ready_fails_fast_on_crash_loop(
    backend: KubernetesBackend, api_client: client.ApiClient
) -> None:
    handle = backend.start(make_spec())
    add_pod(
        api_client,
        handle["name"],
        f"{handle['name']}-x1",
        {
            "phase": "Pending",
            "initContainerStatuses": [
                {
                    "name": "fetch-config",
                    "ready": False,
                    "restartCount": 3,
                    "image": DEFAULT_IMAGE,
                    "imageID": "",
                    "state": {
                        "waiting": {
                            "reason": "CrashLoopBackOff",
                            "message": "back-off 40s restarting failed container",
                        }
                    },
                }
            ],
        },
    )
    t0 = time.monotonic()
    with pytest.raises(
        BackendError,
        match=r"failed to start: .*init container fetch-config: "
        r"waiting: CrashLoopBackOff: back-off 40s",
    ):
        backend.wait_ready(handle, timeout=30)
    assert time.monotonic() - t0 < 2
    assert backend.status(handle) == "dead"


def test_recreate_after_409_patches(
    backend: KubernetesBackend, api_client: client.ApiClient, k8s: KmockThread
) -> None:
    first = backend.start(make_spec())
    upgraded = KubernetesBackend(
        namespace=NS, api_client=api_client, image="registry.example/paddock-serving:2"
    )
    second = upgraded.start(make_spec())
    assert first == second
    created = k8s.requests("POST", rf"/apis/apps/v1/namespaces/{NS}/deployments")
    patched = k8s.requests("PATCH", rf"/apis/apps/v1/namespaces/{NS}/deployments/{first['name']}")
    assert len(created) == 2 and len(patched) == 1
    assert patched[0].headers["Content-Type"].startswith("application/merge-patch+json")
    assert k8s.requests("PATCH", rf"/api/v1/namespaces/{NS}/services/{first['name']}")
    deployment = client.AppsV1Api(api_client).read_namespaced_deployment(first["name"], NS)
    assert deployment.spec.template.spec.containers[0].image == "registry.example/paddock-serving:2"


def test_recreate_waits_for_an_object_still_being_deleted(
    backend: KubernetesBackend, api_client: client.ApiClient
) -> None:
    apps = client.AppsV1Api(api_client)
    old = backend.render(make_spec())[0]
    old["metadata"]["finalizers"] = ["example.com/slow-cleanup"]
    apps.create_namespaced_deployment(NS, old)
    apps.delete_namespaced_deployment(old["metadata"]["name"], NS)  # now only marked
    assert apps.read_namespaced_deployment(old["metadata"]["name"], NS).metadata.deletion_timestamp

    def release() -> None:
        time.sleep(0.3)
        apps.patch_namespaced_deployment(
            old["metadata"]["name"],
            NS,
            {"metadata": {"finalizers": []}},
            _content_type="application/merge-patch+json",
        )

    threading.Thread(target=release, daemon=True).start()
    handle = backend.start(make_spec())
    fresh = apps.read_namespaced_deployment(handle["name"], NS)
    assert fresh.metadata.deletion_timestamp is None and not fresh.metadata.finalizers


def test_stop_deletes_both_and_is_idempotent(
    backend: KubernetesBackend, api_client: client.ApiClient, k8s: KmockThread
) -> None:
    handle = backend.start(make_spec())
    backend.stop(handle)
    for read in (
        client.AppsV1Api(api_client).read_namespaced_deployment,
        client.CoreV1Api(api_client).read_namespaced_service,
    ):
        with pytest.raises(client.ApiException) as err:
            read(handle["name"], NS)
        assert err.value.status == 404
    backend.stop(handle)  # both answer 404 now: still fine
    deletes = k8s.requests("DELETE", rf"/api.*/namespaces/{NS}/(deployments|services)/.*")
    assert len(deletes) == 4
    assert backend.status(handle) == "stopped"
    with pytest.raises(BackendError, match="disappeared"):
        backend.wait_ready(handle, timeout=1)


def test_5xx_is_retried_then_succeeds(backend: KubernetesBackend, k8s: KmockThread) -> None:
    path = rf"/apis/apps/v1/namespaces/{NS}/deployments"
    k8s.on_loop(lambda: k8s.emulator["post", re.compile(path)][:1] << 503)
    handle = backend.start(make_spec())
    # kmock stores a created object before it serves a scripted reaction — like an
    # apiserver that timed out after persisting. So: 503, retry -> 409, merge patch.
    assert len(k8s.requests("POST", path)) == 2
    assert len(k8s.requests("PATCH", rf"{path}/{handle['name']}")) == 1
    # A read that fails twice and then answers is retried transparently.
    item = rf"{path}/{handle['name']}"
    k8s.on_loop(lambda: k8s.emulator["get", re.compile(item)][:2] << 502)
    assert backend.status(handle) == "starting"
    assert len(k8s.requests("GET", item)) == 3


def test_persistent_5xx_is_reported(backend: KubernetesBackend, k8s: KmockThread) -> None:
    handle = backend.start(make_spec())
    item = rf"/apis/apps/v1/namespaces/{NS}/deployments/{handle['name']}"
    k8s.on_loop(
        lambda: (
            k8s.emulator["get", re.compile(item)]
            << 500
            << {"kind": "Status", "code": 500, "message": "etcdserver: request timed out"}
        )
    )
    with pytest.raises(
        BackendError,
        match=r"read Deployment .*answered 500 .*after 3 "
        r"attempts: etcdserver: request timed out",
    ):
        backend.status(handle)
    assert len(k8s.requests("GET", item)) == 3
    with pytest.raises(BackendError, match="answered 500 .*after 3 attempts"):
        backend.wait_ready(handle, timeout=5)
    # logs stay best effort whatever the API says
    k8s.on_loop(lambda: k8s.emulator["get", re.compile(rf"/api/v1/namespaces/{NS}/pods")] << 503)
    assert backend.logs(handle) == ""


def test_unreachable_api_is_reported() -> None:
    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"  # discard port: connection refused
    configuration.retries = 0
    backend = KubernetesBackend(
        namespace=NS,
        api_client=client.ApiClient(configuration),
        retry=RetryPolicy(retries=1, base_seconds=0.01),
    )
    with pytest.raises(BackendError, match="unreachable after 2 attempts"):
        backend.start(make_spec())
    assert backend.logs({"namespace": NS, "name": "x", "kind": "Deployment", "endpoint": ""}) == ""


def test_4xx_is_not_retried(backend: KubernetesBackend, k8s: KmockThread) -> None:
    path = rf"/apis/apps/v1/namespaces/{NS}/deployments"
    k8s.on_loop(
        lambda: (
            k8s.emulator["post", re.compile(path)]
            << 403
            << {"kind": "Status", "code": 403, "message": "forbidden: no RBAC"}
        )
    )
    with pytest.raises(BackendError, match="answered 403 .*forbidden: no RBAC"):
        backend.start(make_spec())
    assert len(k8s.requests("POST", path)) == 1


def test_kserve_variant_lifecycle(api_client: client.ApiClient, k8s: KmockThread) -> None:
    backend = KubernetesBackend(
        namespace=NS, api_client=api_client, kserve=True, retry=FAST_RETRY, poll_interval=5.0
    )
    handle = backend.start(make_spec())
    name = handle["name"]
    assert handle["kind"] == "InferenceService"
    assert handle["endpoint"] == f"http://{name}-predictor.{NS}.svc.cluster.local"
    custom = client.CustomObjectsApi(api_client)
    isvc = custom.get_namespaced_custom_object(
        "serving.kserve.io", "v1beta1", NS, "inferenceservices", name
    )
    assert isvc["spec"]["predictor"]["containers"][0]["name"] == "kserve-container"
    assert backend.start(make_spec()) == handle  # 409 -> merge patch

    def ready() -> None:
        time.sleep(0.3)
        custom.patch_namespaced_custom_object_status(
            "serving.kserve.io",
            "v1beta1",
            NS,
            "inferenceservices",
            name,
            {
                "status": {
                    "conditions": [
                        {"type": "PredictorReady", "status": "True"},
                        {"type": "Ready", "status": "True"},
                    ]
                }
            },
        )

    with pytest.raises(BackendError, match="not ready after .*no Ready condition yet"):
        backend.wait_ready(handle, timeout=0.5)
    threading.Thread(target=ready, daemon=True).start()
    t0 = time.monotonic()
    assert backend.wait_ready(handle, timeout=10) == handle["endpoint"]
    assert time.monotonic() - t0 < 3
    backend.stop(handle)
    backend.stop(handle)
    assert backend.status(handle) == "stopped"
