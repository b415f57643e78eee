"""From a `ServeSpec` to the manifests that serve it, through the Jinja2 templates in
`deployments/templates/`.

Rendering is pure (no API calls), so every manifest can be validated offline. The
templates see exactly the fields of `RenderContext` (jinja's StrictUndefined turns any
other name into an error), and they render every outside value with `tojson`, so no
value can break the YAML structure.

What runs in the pod:

- an init container copies the bundle's small files (config, tokenizer, chat template)
  from S3 into an emptyDir mounted at `/model`, with boto3 from the serving image itself
  (boto3 comes with tensorizer), so there is no second image to pull;
- the vLLM container serves `/model` with `--load-format tensorizer`, streaming the
  weights from `<bundle>/model.tensors`. vLLM takes tensorizer's settings as flat keys
  of `--model-loader-extra-config`.

Beside the workload, when the operator asks for them: a HorizontalPodAutoscaler
(`scaling`) and an Ingress (`routing`), applied after the objects they point at.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlparse

import jinja2
import yaml

from deployments.base import ServeSpec
from paddock.errors import BackendError, ConfigurationError

from .defaults import DEFAULT_HOME, DEFAULT_IMAGE, DEFAULT_NAMESPACE, DEFAULT_S3_SECRET_NAME
from .naming import labels, resource_name, selector
from .routing import IngressContext, IngressSettings, Route
from .scaling import AutoscalerContext, ReplicaSettings
from .secret import SecretKeys

if TYPE_CHECKING:
    from .workloads import Workload

__all__ = [
    "INIT_CONTAINER",
    "MODEL_DIR",
    "PORT",
    "SERVICE_PORT",
    "TEMPLATES_DIR",
    "EnvVar",
    "PodSettings",
    "RenderContext",
    "build_context",
    "render_manifests",
]

log = logging.getLogger(__name__)

# Beside this package, as package data `deployments.templates`.
TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
PORT = 8000
SERVICE_PORT = 80  # of the Service in front of the pods (KServe's is 80 too)
MODEL_DIR = "/model"
INIT_CONTAINER = "fetch-config"
VLLM_COMMAND = ("python3", "-m", "vllm.entrypoints.openai.api_server")
STARTUP_PROBE_PERIOD = 10

# Environment names that look like credentials are never rendered as plain values: the
# local backend passes S3 keys through ServeSpec.env, a pod gets them from the Secret.
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


@dataclass(frozen=True)
class PodSettings:
    """The operator's choices: the same for every submission served on a target."""

    namespace: str = DEFAULT_NAMESPACE
    image: str = DEFAULT_IMAGE
    init_image: str = DEFAULT_IMAGE
    gpus: int = 0
    cpu: str = "4"
    memory: str = "16Gi"
    s3_secret_name: str = DEFAULT_S3_SECRET_NAME
    secret_keys: SecretKeys = field(default_factory=SecretKeys)
    # HOME of the vLLM container; tensorizer reads its S3 credentials from ~/.s3cfg.
    home: str = DEFAULT_HOME
    s3_region: str = "us-east-1"
    default_s3_endpoint: str = "https://s3.amazonaws.com"
    node_selector: dict[str, str] = field(default_factory=dict)
    shm_size: str = "2Gi"
    model_dir_size: str = "1Gi"
    startup_timeout: int = 900
    replicas: ReplicaSettings = field(default_factory=ReplicaSettings)
    ingress: IngressSettings | None = None  # None: reachable inside the cluster only

    def __post_init__(self) -> None:
        if self.gpus < 0:
            raise ConfigurationError(f"gpus must be >= 0, got {self.gpus}")
        if not PurePosixPath(self.home).is_absolute():
            raise ConfigurationError(f"home must be an absolute path, got {self.home!r}")
        object.__setattr__(self, "home", str(PurePosixPath(self.home)))


class EnvVar(NamedTuple):
    name: str
    value: str


@dataclass(frozen=True)
class RenderContext:
    """Everything the templates use, and nothing else."""

    name: str
    namespace: str
    labels: dict[str, str]
    selector: dict[str, str]
    annotations: dict[str, str]  # of the pod
    object_annotations: dict[str, str]  # of the top-level objects
    replicas: int  # to start with; afterwards the autoscaler's, or `scale`'s
    autoscaler: AutoscalerContext | None  # None: a fixed count, no HPA
    ingress: IngressContext | None  # None: no Ingress
    gpus: int
    node_selector: dict[str, str]
    image: str
    container_name: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: tuple[EnvVar, ...]  # besides HOME, which the template sets from `home`
    home: str
    resources: dict[str, dict[str, str | int]]
    port: int
    model_dir: str
    model_dir_size: str
    shm_size: str
    init_image: str
    init_command: tuple[str, ...]
    s3_secret_name: str
    secret_keys: SecretKeys
    s3_region: str
    s3_endpoint: str
    startup_period: int
    startup_failure_threshold: int
    progress_deadline: int


def render_manifests(
    spec: ServeSpec, settings: PodSettings, workload: Workload
) -> list[dict[str, Any]]:
    """The manifests that serve `spec`, in the order they are applied."""
    context = build_context(spec, settings, workload)
    variables = {f.name: getattr(context, f.name) for f in fields(context)}
    templates = list(workload.templates)
    if context.autoscaler is not None:
        templates.append("horizontalpodautoscaler.yaml.j2")
    if context.ingress is not None:
        templates.append("ingress.yaml.j2")
    return [_render_one(template, variables) for template in templates]


def build_context(spec: ServeSpec, settings: PodSettings, workload: Workload) -> RenderContext:
    bucket, prefix = _bucket_and_prefix(spec.bundle_uri)
    s3_endpoint = spec.s3_endpoint or settings.default_s3_endpoint
    name = resource_name(spec.submission_id)
    annotations = {
        "paddock.dev/submission-id": str(spec.submission_id),
        "paddock.dev/served-model-name": spec.served_name,
        "paddock.dev/bundle-uri": spec.bundle_uri,
    }
    route: Route | None = None
    ingress: IngressContext | None = None
    if settings.ingress is not None:
        route = settings.ingress.route(name)
        service = workload.service_name(name)
        ingress = settings.ingress.context(route, annotations, service, SERVICE_PORT)
    return RenderContext(
        name=name,
        namespace=settings.namespace,
        labels=labels(name, spec.submission_id),
        selector=selector(name),
        annotations=annotations,
        object_annotations=workload.object_annotations(annotations),
        replicas=settings.replicas.floor,
        autoscaler=settings.replicas.autoscaler(workload.scale_target(name)),
        ingress=ingress,
        gpus=settings.gpus,
        node_selector=dict(settings.node_selector),
        image=settings.image,
        container_name=workload.container,
        command=VLLM_COMMAND,
        args=_vllm_args(spec, settings.gpus, s3_endpoint, route.root_path if route else None),
        env=_env(spec, settings.s3_secret_name),
        home=settings.home,
        resources=_resources(settings),
        port=PORT,
        model_dir=MODEL_DIR,
        model_dir_size=settings.model_dir_size,
        shm_size=settings.shm_size,
        init_image=settings.init_image,
        init_command=(
            "python3",
            "-c",
            _FETCH_SCRIPT,
            bucket,
            prefix,
            MODEL_DIR,
            *spec.config_files,
        ),
        s3_secret_name=settings.s3_secret_name,
        secret_keys=settings.secret_keys,
        s3_region=settings.s3_region,
        s3_endpoint=s3_endpoint,
        startup_period=STARTUP_PROBE_PERIOD,
        # Loading weights can take minutes: the startup probe waits startup_timeout.
        startup_failure_threshold=max(1, -(-settings.startup_timeout // STARTUP_PROBE_PERIOD)),
        # Past the startup probe's patience, so the rollout fails only after the pod has.
        progress_deadline=settings.startup_timeout + 300,
    )


def _bucket_and_prefix(bundle_uri: str) -> tuple[str, str]:
    uri = urlparse(bundle_uri)
    if uri.scheme != "s3" or not uri.netloc:
        raise BackendError(
            f"the Kubernetes backend needs the bundle in S3 (s3://bucket/prefix/), "
            f"got {bundle_uri!r}: a pod cannot read this machine's files"
        )
    prefix = uri.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return uri.netloc, prefix


def _vllm_args(
    spec: ServeSpec, gpus: int, s3_endpoint: str, root_path: str | None
) -> tuple[str, ...]:
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
    if root_path:
        # Behind an Ingress that routes this path prefix unchanged (see `routing`).
        args += ["--root-path", root_path]
    if gpus > 1:
        args += ["--tensor-parallel-size", str(gpus)]
    if gpus == 0 and "--enforce-eager" not in spec.extra_args:
        # No graph capture: on CPU it takes most of vLLM's start-up (~106 s -> ~35 s).
        args.append("--enforce-eager")
    if spec.generation_defaults:
        args += [
            "--override-generation-config",
            json.dumps(spec.generation_defaults, separators=(",", ":")),
        ]
    args += [str(a) for a in spec.extra_args]
    return tuple(args)


def _env(spec: ServeSpec, s3_secret_name: str) -> tuple[EnvVar, ...]:
    env = [EnvVar("HF_HUB_OFFLINE", "1")]
    for key, value in sorted(spec.env.items()):
        if _SECRET_ENV.search(key):
            log.warning(
                "not rendering %s into the pod spec: credentials come from Secret %s",
                key,
                s3_secret_name,
            )
        elif key == "HOME":
            log.warning("not rendering HOME from the spec: the pod's HOME holds ~/.s3cfg")
        else:
            env.append(EnvVar(str(key), str(value)))
    return tuple(env)


def _resources(settings: PodSettings) -> dict[str, dict[str, str | int]]:
    requests: dict[str, str | int] = {"cpu": settings.cpu, "memory": settings.memory}
    if settings.gpus > 0:
        requests["nvidia.com/gpu"] = settings.gpus
    return {"requests": requests, "limits": dict(requests)}


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def _render_one(template: str, variables: dict[str, Any]) -> dict[str, Any]:
    text = _environment().get_template(template).render(**variables)
    try:
        manifest = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # a template bug, not a user error
        raise BackendError(f"template {template} rendered invalid YAML: {exc}") from exc
    if not isinstance(manifest, dict):
        raise BackendError(f"template {template} rendered no mapping")
    return manifest
