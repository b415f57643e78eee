"""Kubernetes serving backend: a vLLM Deployment + ClusterIP Service (or a KServe
InferenceService) rendered from the Jinja2 templates in `deployments/templates/` and
applied with the official `kubernetes` client.

What runs in the pod:

- an init container copies the bundle's small files (config, tokenizer, chat template)
  from S3 into an emptyDir mounted at `/model` (boto3; by default in the serving image
  itself, which has boto3 through tensorizer — no second image to pull);
- the vLLM container serves `/model` with `--load-format tensorizer`, streaming the weights
  from `<bundle>/model.tensors` (flat `--model-loader-extra-config` keys, DESIGN.md).

S3 credentials are never rendered into a manifest. They come from ONE existing Secret
(`s3_secret_name`) with three keys (names configurable through `secret_keys`)::

    access_key_id       the S3 access key      -> AWS_ACCESS_KEY_ID of the init container
    secret_access_key   the S3 secret key      -> AWS_SECRET_ACCESS_KEY of the init container
    s3cfg               an s3cmd-style file    -> mounted at ~/.s3cfg for vLLM/tensorizer
                        ("[default]\\naccess_key = …\\nsecret_key = …\\n")

`s3_secret_manifest()` renders such a Secret for an operator to apply.

Readiness is watched (Deployment rollout status, or the InferenceService `Ready`
condition); API 5xx/429 and connection errors are retried with exponential backoff;
409 on create becomes a merge patch and 404 on delete counts as done, so `start` and
`stop` are idempotent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jinja2
import urllib3
import yaml

from deployments.base import BackendError, BackendState, ServeSpec

__all__ = [
    "KubernetesBackend",
    "DEFAULT_IMAGE",
    "VLLM_BASE_IMAGE",
    "resource_name",
    "s3_secret_manifest",
    "validate_manifests",
]

log = logging.getLogger(__name__)

# The serving image is built by serving/Containerfile: FROM the pinned vLLM image + our
# plugin. The tag says which vLLM it carries.
VLLM_VERSION = "v0.32.0"
VLLM_BASE_IMAGE = f"vllm/vllm-openai:{VLLM_VERSION}"
DEFAULT_IMAGE = f"paddock-serving:vllm-{VLLM_VERSION}"

TEMPLATES_DIR = Path(__file__).with_name("templates")
PORT = 8000
MODEL_DIR = "/model"
VLLM_CONTAINER = "vllm"
KSERVE_CONTAINER = "kserve-container"  # KServe requires this name for a custom predictor
INIT_CONTAINER = "fetch-config"
APP_NAME = "paddock-model"
SUBMISSION_LABEL = "paddock.dev/submission"
KSERVE_GROUP, KSERVE_VERSION, KSERVE_PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"

DEFAULT_SECRET_KEYS = {
    "access_key_id": "access_key_id",
    "secret_access_key": "secret_access_key",
    "s3cfg": "s3cfg",
}

# Waiting reasons from which a pod does not recover by itself: fail fast instead of
# sitting out the whole timeout.
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

# Environment names that look like credentials are never rendered as plain values (the
# local backend gets S3 keys through ServeSpec.env; on Kubernetes they come from the Secret).
_SECRET_ENV = re.compile(r"ACCESS_KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL|PRIVATE|^AWS_SESSION", re.I)

# Runs in the init container (python3 + boto3): argv = bucket, prefix, dest, *files.
# With no file list, copies every object under the prefix except the tensors.
_FETCH_SCRIPT = """\
import os, sys, boto3
bucket, prefix, dest, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
s3 = boto3.client("s3", endpoint_url=os.environ.get("S3_ENDPOINT") or None)
if not names:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    names = [o["Key"][len(prefix):] for p in pages for o in p.get("Contents", [])]
    names = [n for n in names if n and not n.endswith(".tensors")]
for name in names:
    target = os.path.join(dest, name)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    s3.download_file(bucket, prefix + name, target)
    print("fetched", name, os.path.getsize(target), "bytes", flush=True)
print("fetched", len(names), "files into", dest, flush=True)
"""


# --------------------------------------------------------------------------- naming


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def resource_name(submission_id: str, *, prefix: str = "paddock", max_len: int = 45) -> str:
    """A DNS-1035 label for the submission's objects: `paddock-<id>`.

    Lower-case letters, digits and '-', starting with a letter. Any lossy mapping (case,
    other characters, truncation) appends a short hash of the id so two ids never collide.
    45 characters leave room for KServe's `-predictor` suffixes under the 63 limit.
    """
    raw = str(submission_id)
    slug = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]+", "-", raw.lower())).strip("-")
    name = f"{prefix}-{slug}" if slug else prefix
    if slug != raw or len(name) > max_len:
        name = f"{name[: max_len - 9].rstrip('-')}-{_short_hash(raw)}"
    return name


def _label_value(value: str) -> str:
    if re.fullmatch(r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]", value):
        return value
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", value).strip("-_.")[:54].strip("-_.")
    return f"{slug}-{_short_hash(value)}" if slug else _short_hash(value)


# --------------------------------------------------------------------------- helpers


def s3_secret_manifest(
    name: str,
    namespace: str,
    access_key_id: str,
    secret_access_key: str,
    *,
    secret_keys: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The Secret layout the backend expects, for an operator to apply once per namespace.

    Not used by `start`: the backend only references an existing Secret.
    """
    keys = {**DEFAULT_SECRET_KEYS, **(secret_keys or {})}
    s3cfg = f"[default]\naccess_key = {access_key_id}\nsecret_key = {secret_access_key}\n"

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "paddock"},
        },
        "type": "Opaque",
        "data": {
            keys["access_key_id"]: b64(access_key_id),
            keys["secret_access_key"]: b64(secret_access_key),
            keys["s3cfg"]: b64(s3cfg),
        },
    }


# Keys of a KServe PredictorSpec that are not PodSpec fields (ComponentExtensionSpec etc.).
_PREDICTOR_EXTENSION_KEYS = frozenset(
    {
        "minReplicas",
        "maxReplicas",
        "scaleTarget",
        "scaleMetric",
        "scaleMetricType",
        "containerConcurrency",
        "timeout",
        "canaryTrafficPercent",
        "logger",
        "batcher",
        "labels",
        "annotations",
        "deploymentStrategy",
        "autoScaling",
        "workerSpec",
        "model",
    }
)


def validate_manifests(
    manifests: Iterable[dict[str, Any]], version: str | None = None, *, strict: bool = True
) -> list[str]:
    """Validate rendered manifests offline with `kubernetes-validate` (a dev dependency).

    Built-in kinds are validated as they are. The KServe InferenceService is a CRD, which
    that tool has no schema for: its predictor's pod part is validated as a v1 Pod spec
    instead, and its KServe-specific shape is checked by hand. Returns one line per
    manifest; raises on the first invalid one.
    """
    import kubernetes_validate  # dev dependency: imported only when asked

    version = version or kubernetes_validate.latest_version()
    checked = []
    for manifest in manifests:
        if manifest.get("kind") == "InferenceService":
            _check_inferenceservice_shape(manifest)
            predictor = manifest["spec"]["predictor"]
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": manifest["metadata"]["name"],
                    "labels": predictor.get("labels", {}),
                },
                "spec": {k: v for k, v in predictor.items() if k not in _PREDICTOR_EXTENSION_KEYS},
            }
            kubernetes_validate.validate(pod, version, strict=strict)
            checked.append(
                f"InferenceService {manifest['metadata']['name']}: shape checked by "
                f"hand, predictor pod spec valid as v1 Pod ({version}, strict={strict})"
            )
        else:
            kubernetes_validate.validate(manifest, version, strict=strict)
            checked.append(
                f"{manifest['kind']} {manifest['metadata']['name']}: valid "
                f"({version}, strict={strict})"
            )
    return checked


def _check_inferenceservice_shape(manifest: dict[str, Any]) -> None:
    def need(cond: bool, what: str) -> None:
        if not cond:
            raise ValueError(f"InferenceService shape: {what}")

    need(manifest.get("apiVersion") == f"{KSERVE_GROUP}/{KSERVE_VERSION}", "apiVersion")
    meta = manifest.get("metadata", {})
    need(bool(re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", meta.get("name", ""))), "DNS-1035 name")
    need(len(meta["name"]) <= 45, "name too long for KServe's derived names")
    need(set(manifest) == {"apiVersion", "kind", "metadata", "spec"}, "top-level keys")
    need(set(manifest["spec"]) == {"predictor"}, "spec has only a predictor")
    predictor = manifest["spec"]["predictor"]
    containers = predictor.get("containers", [])
    need(len(containers) == 1, "exactly one predictor container")
    need(containers[0].get("name") == KSERVE_CONTAINER, f"container named {KSERVE_CONTAINER}")
    need(isinstance(predictor.get("minReplicas"), int), "minReplicas")
    need(predictor.get("maxReplicas", 0) >= predictor["minReplicas"], "maxReplicas >= minReplicas")


# --------------------------------------------------------------------------- backend


class KubernetesBackend:
    """Serve a submission on Kubernetes. See the module docstring for what is created.

    The handle is ``{"namespace", "name", "kind", "endpoint"}`` where kind is
    "Deployment" (a Deployment and a Service, both called `name`) or "InferenceService".
    """

    name = "kubernetes"

    def __init__(
        self,
        *,
        namespace: str = "default",
        image: str = DEFAULT_IMAGE,
        gpus: int = 0,
        cpu: str = "4",
        memory: str = "16Gi",
        s3_secret_name: str = "paddock-s3",
        kserve: bool = False,
        api_client: Any | None = None,
        endpoint_host_template: str = "http://{name}.{namespace}.svc.cluster.local",
        init_image: str | None = None,
        secret_keys: dict[str, str] | None = None,
        s3cfg_path: str = "/root/.s3cfg",
        s3_region: str = "us-east-1",
        default_s3_endpoint: str = "https://s3.amazonaws.com",
        node_selector: dict[str, str] | None = None,
        shm_size: str = "2Gi",
        model_dir_size: str = "1Gi",
        startup_timeout: int = 900,
        replicas: int = 1,
        retries: int = 4,
        retry_delay: float = 0.5,
        poll_interval: float = 5.0,
    ) -> None:
        if gpus < 0 or replicas < 1:
            raise ValueError("gpus must be >= 0 and replicas >= 1")
        self.namespace = namespace
        self.image = image
        self.gpus = int(gpus)
        self.cpu = str(cpu)
        self.memory = str(memory)
        self.s3_secret_name = s3_secret_name
        self.kserve = bool(kserve)
        self.endpoint_host_template = endpoint_host_template
        self.init_image = init_image or image
        self.secret_keys = {**DEFAULT_SECRET_KEYS, **(secret_keys or {})}
        self.s3cfg_path = s3cfg_path
        self.s3_region = s3_region
        self.default_s3_endpoint = default_s3_endpoint
        self.node_selector = dict(node_selector or {})
        self.shm_size = shm_size
        self.model_dir_size = model_dir_size
        self.startup_timeout = int(startup_timeout)
        self.replicas = int(replicas)
        self.retries = max(1, int(retries))
        self.retry_delay = float(retry_delay)
        self.poll_interval = float(poll_interval)
        self._api_client = api_client
        self._lock = threading.Lock()
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            autoescape=False,
        )

    # ------------------------------------------------------------------ rendering

    def object_name(self, spec_or_id: ServeSpec | str) -> str:
        sid = spec_or_id.submission_id if isinstance(spec_or_id, ServeSpec) else spec_or_id
        return resource_name(sid)

    def _endpoint(self, name: str) -> str:
        service = f"{name}-predictor" if self.kserve else name
        url = self.endpoint_host_template.format(name=service, namespace=self.namespace)
        return url.rstrip("/")

    def _context(self, spec: ServeSpec) -> dict[str, Any]:
        uri = urlparse(spec.bundle_uri)
        if uri.scheme != "s3" or not uri.netloc:
            raise BackendError(
                f"the Kubernetes backend needs the bundle in S3 (s3://bucket/prefix/), "
                f"got {spec.bundle_uri!r}: a pod cannot read this machine's files"
            )
        bucket, prefix = uri.netloc, uri.path.lstrip("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        s3_endpoint = spec.s3_endpoint or self.default_s3_endpoint
        name = resource_name(spec.submission_id)

        extra_config: dict[str, Any] = {
            "tensorizer_uri": spec.tensorizer_uri,
            "s3_endpoint": s3_endpoint,
        }
        if s3_endpoint.startswith("http://"):
            extra_config["stream_kwargs"] = {"force_http": True}
        args = [
            "--host",
            "0.0.0.0",
            "--port",
            str(PORT),
            "--model",
            MODEL_DIR,
            "--load-format",
            "tensorizer",
            "--model-loader-extra-config",
            json.dumps(extra_config, separators=(",", ":")),
            "--served-model-name",
            spec.served_name,
            "--dtype",
            spec.dtype,
            "--max-model-len",
            str(spec.max_model_len),
        ]
        if self.gpus > 1:
            args += ["--tensor-parallel-size", str(self.gpus)]
        if self.gpus == 0 and "--enforce-eager" not in spec.extra_args:
            args.append("--enforce-eager")  # DESIGN.md: start-up ~106 s -> ~35 s on CPU
        args += [str(a) for a in spec.extra_args]

        env = [{"name": "HF_HUB_OFFLINE", "value": "1"}]
        for key, value in sorted(spec.env.items()):
            if _SECRET_ENV.search(key):
                log.warning(
                    "not rendering %s into the pod spec: credentials come from Secret %s",
                    key,
                    self.s3_secret_name,
                )
                continue
            env.append({"name": str(key), "value": str(value)})

        resources: dict[str, dict[str, Any]] = {
            "requests": {"cpu": self.cpu, "memory": self.memory},
            "limits": {"cpu": self.cpu, "memory": self.memory},
        }
        if self.gpus > 0:
            resources["requests"]["nvidia.com/gpu"] = self.gpus
            resources["limits"]["nvidia.com/gpu"] = self.gpus

        labels = {
            "app.kubernetes.io/name": APP_NAME,
            "app.kubernetes.io/instance": name,
            "app.kubernetes.io/managed-by": "paddock",
            SUBMISSION_LABEL: _label_value(str(spec.submission_id)),
        }
        annotations = {
            "paddock.dev/submission-id": str(spec.submission_id),
            "paddock.dev/served-model-name": spec.served_name,
            "paddock.dev/bundle-uri": spec.bundle_uri,
        }
        startup_period = 10
        return {
            "name": name,
            "namespace": self.namespace,
            "labels": labels,
            "annotations": annotations,
            "isvc_annotations": {
                **annotations,
                "serving.kserve.io/deploymentMode": "RawDeployment",
            },
            "selector": {"app.kubernetes.io/name": APP_NAME, "app.kubernetes.io/instance": name},
            "replicas": self.replicas,
            "gpus": self.gpus,
            "image": self.image,
            "init_image": self.init_image,
            "init_command": [
                "python3",
                "-c",
                _FETCH_SCRIPT,
                bucket,
                prefix,
                MODEL_DIR,
                *spec.config_files,
            ],
            "container_name": KSERVE_CONTAINER if self.kserve else VLLM_CONTAINER,
            "command": ["python3", "-m", "vllm.entrypoints.openai.api_server"],
            "args": args,
            "env": env,
            "resources": resources,
            "port": PORT,
            "model_dir": MODEL_DIR,
            "model_dir_size": self.model_dir_size,
            "shm_size": self.shm_size,
            "s3_secret_name": self.s3_secret_name,
            "secret_keys": self.secret_keys,
            "s3cfg_path": self.s3cfg_path,
            "s3_region": self.s3_region,
            "s3_endpoint": s3_endpoint,
            "node_selector": self.node_selector,
            "startup_period": startup_period,
            "startup_failure_threshold": max(1, -(-self.startup_timeout // startup_period)),
            "progress_deadline": self.startup_timeout + 300,
        }

    def _render_one(self, template: str, context: dict[str, Any]) -> dict[str, Any]:
        text = self._env.get_template(template).render(**context)
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:  # a template bug, not a user error
            raise BackendError(f"template {template} rendered invalid YAML: {exc}") from exc

    def render(self, spec: ServeSpec) -> list[dict[str, Any]]:
        """The manifests `start` applies, in order. Pure: no API calls."""
        context = self._context(spec)
        if self.kserve:
            return [self._render_one("inferenceservice.yaml.j2", context)]
        return [
            self._render_one("deployment.yaml.j2", context),
            self._render_one("service.yaml.j2", context),
        ]

    # ------------------------------------------------------------------ API plumbing

    @property
    def api_client(self) -> Any:
        with self._lock:
            if self._api_client is None:
                from kubernetes import client, config

                configuration = client.Configuration()
                try:
                    config.load_incluster_config(client_configuration=configuration)
                except config.ConfigException:
                    try:
                        config.load_kube_config(client_configuration=configuration)
                    except (config.ConfigException, OSError) as exc:
                        raise BackendError(
                            f"no Kubernetes configuration (not in a cluster, no usable "
                            f"kubeconfig): {exc}"
                        ) from exc
                self._api_client = client.ApiClient(configuration)
            return self._api_client

    def _apis(self) -> tuple[Any, Any, Any]:
        from kubernetes import client

        api = self.api_client
        return client.AppsV1Api(api), client.CoreV1Api(api), client.CustomObjectsApi(api)

    @staticmethod
    def _api_message(exc: Any) -> str:
        try:
            body = json.loads(exc.body or "")
            return str(body.get("message") or exc.reason)
        except (ValueError, AttributeError, TypeError):
            return str(getattr(exc, "reason", "") or exc)

    def _call(
        self,
        what: str,
        fn: Callable[..., Any],
        *args: Any,
        expect: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> Any:
        """Call the API; retry 5xx/429/connection errors with backoff, then BackendError.

        Statuses in `expect` are re-raised as the client's ApiException for the caller.
        """
        from kubernetes.client.exceptions import ApiException

        delay = self.retry_delay
        for attempt in range(1, self.retries + 1):
            try:
                return fn(*args, **kwargs)
            except ApiException as exc:
                status = exc.status or 0
                if status in expect:
                    raise
                transient = status >= 500 or status == 429
                if not transient or attempt == self.retries:
                    tried = f" after {attempt} attempts" if transient else ""
                    raise BackendError(
                        f"{what}: Kubernetes API answered {status} {exc.reason}{tried}: "
                        f"{self._api_message(exc)}"
                    ) from exc
                log.info(
                    "%s: API answered %s, retry %d/%d in %.1fs",
                    what,
                    status,
                    attempt,
                    self.retries - 1,
                    delay,
                )
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                if attempt == self.retries:
                    raise BackendError(
                        f"{what}: Kubernetes API unreachable after {attempt} attempts: {exc}"
                    ) from exc
                log.info(
                    "%s: %s, retry %d/%d in %.1fs", what, exc, attempt, self.retries - 1, delay
                )
            time.sleep(delay * (0.75 + random.random() / 2))
            delay *= 2
        raise AssertionError("unreachable")

    def _to_dict(self, obj: Any) -> dict[str, Any]:
        if isinstance(obj, dict):
            return obj
        return self.api_client.sanitize_for_serialization(obj)

    # ------------------------------------------------------------------ apply / delete

    def _create_fns(self, manifest: dict[str, Any]) -> tuple[Callable, Callable, Callable, tuple]:
        apps, core, custom = self._apis()
        kind, ns = manifest["kind"], manifest["metadata"]["namespace"]
        if kind == "Deployment":
            return (
                apps.create_namespaced_deployment,
                apps.patch_namespaced_deployment,
                apps.read_namespaced_deployment,
                (ns,),
            )
        if kind == "Service":
            return (
                core.create_namespaced_service,
                core.patch_namespaced_service,
                core.read_namespaced_service,
                (ns,),
            )
        if kind == "InferenceService":
            base = (KSERVE_GROUP, KSERVE_VERSION, ns, KSERVE_PLURAL)
            return (
                custom.create_namespaced_custom_object,
                custom.patch_namespaced_custom_object,
                custom.get_namespaced_custom_object,
                base,
            )
        raise BackendError(f"cannot apply kind {kind}")

    def _apply(self, manifest: dict[str, Any], *, gone_wait: float = 30.0) -> None:
        """Create, or on 409 merge-patch the existing object (kmock and we use no PUT).

        A merge patch replaces lists (containers, args, env) wholesale, so the result
        equals the rendered manifest for every field we render.
        """
        from kubernetes.client.exceptions import ApiException

        create, patch, read, base = self._create_fns(manifest)
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        what = f"{kind} {self.namespace}/{name}"
        deadline = time.monotonic() + gone_wait
        while True:
            try:
                if kind == "InferenceService":
                    self._call(f"create {what}", create, *base, manifest, expect=(404, 409))
                else:
                    self._call(f"create {what}", create, *base, manifest, expect=(409,))
                return
            except ApiException as exc:
                if exc.status == 404:  # only for custom objects
                    raise BackendError(
                        f"create {what}: the API has no {KSERVE_GROUP}/{KSERVE_VERSION} "
                        f"{KSERVE_PLURAL} (is KServe installed?) or namespace "
                        f"{self.namespace!r} is missing: {self._api_message(exc)}"
                    ) from exc
            # 409: it exists. Patch it to the rendered state...
            try:
                if kind == "InferenceService":
                    current = self._call(
                        f"patch {what}", patch, *base, name, manifest, expect=(404,)
                    )
                else:
                    current = self._call(
                        f"patch {what}",
                        patch,
                        name,
                        *base,
                        manifest,
                        _content_type="application/merge-patch+json",
                        expect=(404,),
                    )
            except ApiException:
                if time.monotonic() > deadline:
                    raise BackendError(
                        f"{what} keeps vanishing between create (409) and "
                        f"patch (404); giving up after {gone_wait:.0f}s"
                    ) from None
                continue  # deleted between our create and patch: create again
            # ...unless it is on its way out (a previous stop): wait for it to go, re-create.
            meta = self._to_dict(current).get("metadata", {})
            if not meta.get("deletionTimestamp"):
                log.info("%s already existed: patched", what)
                return
            if time.monotonic() > deadline:
                raise BackendError(
                    f"{what} is still being deleted after {gone_wait:.0f}s; cannot re-create it"
                )
            time.sleep(min(1.0, self.retry_delay))

    def start(self, spec: ServeSpec) -> dict[str, Any]:
        manifests = self.render(spec)
        for manifest in manifests:
            self._apply(manifest)
        name = manifests[0]["metadata"]["name"]
        handle = {
            "namespace": self.namespace,
            "name": name,
            "kind": manifests[0]["kind"],
            "endpoint": self._endpoint(name),
        }
        log.info("started %s %s/%s -> %s", handle["kind"], self.namespace, name, handle["endpoint"])
        return handle

    def stop(self, handle: dict[str, Any]) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        apps, core, custom = self._apis()
        ns, name = handle["namespace"], handle["name"]
        body = client.V1DeleteOptions(propagation_policy="Background")
        if handle.get("kind") == "InferenceService":
            targets = [
                (
                    "InferenceService",
                    custom.delete_namespaced_custom_object,
                    (KSERVE_GROUP, KSERVE_VERSION, ns, KSERVE_PLURAL, name),
                )
            ]
        else:
            targets = [
                ("Service", core.delete_namespaced_service, (name, ns)),
                ("Deployment", apps.delete_namespaced_deployment, (name, ns)),
            ]
        for kind, delete, args in targets:
            try:
                self._call(f"delete {kind} {ns}/{name}", delete, *args, body=body, expect=(404,))
                log.info("deleted %s %s/%s", kind, ns, name)
            except ApiException:
                log.info("%s %s/%s was already gone", kind, ns, name)

    # ------------------------------------------------------------------ observing

    def _read(self, handle: dict[str, Any]) -> dict[str, Any] | None:
        """The current object as a camelCase dict, or None when it does not exist."""
        from kubernetes.client.exceptions import ApiException

        apps, _, custom = self._apis()
        ns, name = handle["namespace"], handle["name"]
        try:
            if handle.get("kind") == "InferenceService":
                obj = self._call(
                    f"read InferenceService {ns}/{name}",
                    custom.get_namespaced_custom_object,
                    KSERVE_GROUP,
                    KSERVE_VERSION,
                    ns,
                    KSERVE_PLURAL,
                    name,
                    expect=(404,),
                )
            else:
                obj = self._call(
                    f"read Deployment {ns}/{name}",
                    apps.read_namespaced_deployment,
                    name,
                    ns,
                    expect=(404,),
                )
        except ApiException:
            return None
        return self._to_dict(obj)

    def _pods(self, handle: dict[str, Any]) -> list[dict[str, Any]]:
        """Pods of this deployment, newest first; [] when none (or the list is refused)."""
        from kubernetes.client.exceptions import ApiException

        _, core, _ = self._apis()
        selector = f"app.kubernetes.io/instance={handle['name']}"
        try:
            result = self._call(
                f"list pods of {handle['name']}",
                core.list_namespaced_pod,
                handle["namespace"],
                label_selector=selector,
                expect=(403, 404),
            )
        except (ApiException, BackendError):
            return []
        pods = [self._to_dict(p) for p in (result.items or [])]
        # Filter again client-side: not every API server (kmock) honours selectors.
        pods = [
            p
            for p in pods
            if p.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/instance")
            == handle["name"]
        ]
        pods.sort(key=lambda p: p.get("metadata", {}).get("creationTimestamp") or "", reverse=True)
        return pods

    @staticmethod
    def _pod_problems(pods: list[dict[str, Any]]) -> tuple[list[str], bool]:
        """Human-readable pod/container states that explain "not ready"; and whether fatal."""
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
                    state = cs.get("state") or {}
                    cname = cs.get("name", "?")
                    restarts = cs.get("restartCount") or 0
                    if "waiting" in state:
                        w = state["waiting"] or {}
                        reason = w.get("reason", "")
                        if reason in ("", "PodInitializing", "ContainerCreating"):
                            continue
                        fatal |= reason in FATAL_WAITING_REASONS
                        message = f": {w['message']}" if w.get("message") else ""
                        notes.append(
                            f"pod {pname} {label} {cname}: waiting: {reason}{message} "
                            f"(restarts {restarts})"
                        )
                    elif "terminated" in state:
                        t = state["terminated"] or {}
                        if t.get("exitCode") == 0 and label == "init container":
                            continue
                        notes.append(
                            f"pod {pname} {label} {cname}: terminated "
                            f"(exit {t.get('exitCode')}): {t.get('reason', '')}: "
                            f"{t.get('message', '')}".rstrip(": ")
                        )
                    elif "running" in state and not cs.get("ready") and label == "container":
                        last = (cs.get("lastState") or {}).get("terminated") or {}
                        if last:
                            notes.append(
                                f"pod {pname} container {cname}: running, not ready; "
                                f"last exit {last.get('exitCode')} "
                                f"{last.get('reason', '')} (restarts {restarts})"
                            )
        return notes, fatal

    @staticmethod
    def _judge(kind: str, obj: dict[str, Any]) -> tuple[BackendState, str, bool]:
        """(state, detail, fatal) from the object alone (no pods)."""
        status = obj.get("status") or {}
        conditions = status.get("conditions") or []
        if kind == "InferenceService":
            ready = next((c for c in conditions if c.get("type") == "Ready"), None)
            if ready and ready.get("status") == "True":
                return "ready", "Ready", False
            bad = [
                f"{c.get('type')}={c.get('status')} {c.get('reason', '')}: "
                f"{c.get('message', '')}".rstrip(": ")
                for c in conditions
                if c.get("status") != "True"
            ]
            return "starting", "; ".join(bad) or "no Ready condition yet", False

        want = (obj.get("spec") or {}).get("replicas", 1)
        if want is None:
            want = 1
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
                fatal = True
            if c.get("type") == "ReplicaFailure" and c.get("status") == "True":
                fatal = True
            if c.get("status") != "True" or c.get("type") == "ReplicaFailure":
                detail += (
                    f"; {c.get('type')}={c.get('status')} {c.get('reason', '')}: "
                    f"{c.get('message', '')}"
                ).rstrip(": ")
        if fresh and updated >= want and total <= updated and ready_n >= want and want > 0:
            return "ready", detail, False
        return ("dead" if fatal else "starting"), detail, fatal

    def _assess(self, handle: dict[str, Any]) -> tuple[BackendState, str]:
        obj = self._read(handle)
        if obj is None:
            return (
                "stopped",
                f"{handle.get('kind', 'Deployment')} {handle['namespace']}/"
                f"{handle['name']} does not exist",
            )
        state, detail, fatal = self._judge(handle.get("kind", "Deployment"), obj)
        if state == "ready":
            return state, detail
        notes, pods_fatal = self._pod_problems(self._pods(handle))
        if notes:
            detail += "; " + "; ".join(notes)
        else:
            detail += "; no pod problems reported"
        return ("dead" if fatal or pods_fatal else "starting"), detail

    def _watch_window(self, handle: dict[str, Any], seconds: float) -> None:
        """Watch the object for up to `seconds`; return early when an event shows it ready
        (or failed). The caller re-reads and decides: the watch only saves polling."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        apps, _, custom = self._apis()
        ns, name, kind = handle["namespace"], handle["name"], handle.get("kind", "Deployment")
        if kind == "InferenceService":
            fn, args = (
                custom.list_namespaced_custom_object,
                (KSERVE_GROUP, KSERVE_VERSION, ns, KSERVE_PLURAL),
            )
        else:
            fn, args = apps.list_namespaced_deployment, (ns,)
        w = watch.Watch()
        try:
            for event in w.stream(
                fn,
                *args,
                field_selector=f"metadata.name={name}",
                timeout_seconds=max(1, int(seconds + 0.999)),
                _request_timeout=(5, max(0.1, seconds)),
            ):
                obj = self._to_dict(event.get("object"))
                if event.get("type") == "ERROR":
                    return
                if (obj.get("metadata") or {}).get("name") != name:
                    continue  # selectors are not honoured everywhere
                if event.get("type") == "DELETED":
                    return
                state, _, fatal = self._judge(kind, obj)
                if state == "ready" or fatal:
                    return
        except (urllib3.exceptions.HTTPError, TimeoutError, OSError):
            return  # read timeout: the window is over
        except ApiException as exc:
            if (exc.status or 0) >= 500 or exc.status in (410, 429):
                time.sleep(min(seconds, self.retry_delay))
                return
            raise BackendError(
                f"watch {kind} {ns}/{name}: Kubernetes API answered "
                f"{exc.status} {exc.reason}: {self._api_message(exc)}"
            ) from exc
        finally:
            w.stop()

    def wait_ready(self, handle: dict[str, Any], *, timeout: float) -> str:
        """Watch the rollout until every replica is updated and ready (the readiness probe
        is GET /health), or the InferenceService is Ready. Returns the endpoint."""
        kind = handle.get("kind", "Deployment")
        what = f"{kind} {handle['namespace']}/{handle['name']}"
        deadline = time.monotonic() + timeout
        while True:
            state, detail = self._assess(handle)
            if state == "ready":
                log.info("%s ready: %s", what, detail)
                return handle["endpoint"]
            if state == "stopped":
                raise BackendError(f"{what} disappeared while waiting for it to become ready")
            if state == "dead":
                raise BackendError(f"{what} failed to start: {detail}", log_tail=self.logs(handle))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BackendError(
                    f"{what} not ready after {timeout:g}s: {detail}", log_tail=self.logs(handle)
                )
            self._watch_window(handle, min(remaining, self.poll_interval))

    def status(self, handle: dict[str, Any]) -> BackendState:
        return self._assess(handle)[0]

    def logs(self, handle: dict[str, Any], *, lines: int = 40) -> str:
        """The newest pod's vLLM log tail (or its init container's, if that has not
        finished); "" when there is no pod or the log cannot be read."""
        try:
            pods = self._pods(handle)
            if not pods:
                return ""
            pod = pods[0]
            status = pod.get("status") or {}
            container = (
                KSERVE_CONTAINER if handle.get("kind") == "InferenceService" else VLLM_CONTAINER
            )
            for cs in status.get("initContainerStatuses") or []:
                terminated = (cs.get("state") or {}).get("terminated") or {}
                if cs.get("name") == INIT_CONTAINER and terminated.get("exitCode") != 0:
                    container = INIT_CONTAINER
            _, core, _ = self._apis()
            # Raw bytes: the log is text/plain, which the client's deserializer need not
            # understand (and a log may not be valid UTF-8).
            response = self._call(
                f"read log of {pod['metadata']['name']}",
                core.read_namespaced_pod_log,
                pod["metadata"]["name"],
                handle["namespace"],
                container=container,
                tail_lines=lines,
                _preload_content=False,
            )
            try:
                if (getattr(response, "status", 200) or 200) >= 400:
                    return ""
                data = response.data
            finally:
                response.release_conn()
        except Exception as exc:  # best effort by contract
            log.debug("no logs for %s: %s", handle.get("name"), exc)
            return ""
        text = data.decode(errors="replace") if isinstance(data, bytes) else str(data or "")
        return "\n".join(text.splitlines()[-lines:])
