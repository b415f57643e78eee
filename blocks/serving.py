"""Where models run, and the latency bar they must clear there."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from prefect.blocks.core import Block
from pydantic import Field

from deployments import ServingBackend, get_backend
from deployments.kubernetes.defaults import (
    DEFAULT_MAX_REPLICAS,
    DEFAULT_MIN_REPLICAS,
    DEFAULT_NAMESPACE,
    DEFAULT_S3_SECRET_NAME,
    DEFAULT_WAITING_PER_REPLICA,
)

__all__ = ["ServingTarget"]


class ServingTarget(Block):
    _block_type_name = "Paddock Serving Target"
    _description = "The serving backend (local vLLM process or Kubernetes) and its SLOs."

    backend: Literal["local", "kubernetes"] = "local"
    ready_timeout_s: float = Field(default=600, gt=0)
    dtype: str = Field(
        default="float32",
        description="Forced on every model (float32: bfloat16 is unreliable on CPU); "
        "`auto` serves each model in its config's torch_dtype.",
    )
    max_model_len: int = Field(
        default=2048,
        gt=0,
        description="A cap: each model is served with its own max_position_embeddings, "
        "never more than this.",
    )
    # local
    serving_python: str | None = Field(
        default=None, description="Python of the serving environment (.venv-serving)."
    )
    local_copy: bool = Field(
        default=True,
        description="With an S3 store, map the bundle serialized on this machine (the "
        "same bytes, not streamed back; the upload then runs beside the deploy, and a "
        "redeploy maps it only if it hashes to the stored one); false: always stream.",
    )
    # kubernetes
    namespace: str = DEFAULT_NAMESPACE
    image: str | None = None
    gpus: int = Field(default=0, ge=0)
    kserve: bool = False
    s3_secret_name: str = DEFAULT_S3_SECRET_NAME
    # kubernetes: reachable from outside the cluster (an Ingress per model; without one
    # the endpoint is cluster DNS and the control plane must run in the cluster), and
    # replicas (an HPA on vLLM's queue when max_replicas > 1; min_replicas=0 lets paddock
    # park idle models at zero)
    ingress_host: str | None = Field(
        default=None,
        description="Host of each model's Ingress; '{name}' in it gives each model its own "
        "host (e.g. '{name}.models.example.com'). Without it or a path prefix: no Ingress.",
    )
    ingress_path_prefix: str | None = Field(
        default=None, description="Serve each model under <prefix>/<name>, e.g. '/models'."
    )
    ingress_class: str | None = Field(default=None, description="IngressClass, e.g. 'nginx'.")
    ingress_tls_secret: str | None = Field(
        default=None, description="TLS Secret for ingress_host (the URL becomes https)."
    )
    ingress_annotations: dict[str, str] = Field(
        default_factory=dict, description="Controller-specific Ingress annotations."
    )
    min_replicas: int = Field(
        default=DEFAULT_MIN_REPLICAS, ge=0, description="0: paddock may park idle models."
    )
    max_replicas: int = Field(default=DEFAULT_MAX_REPLICAS, ge=1)
    waiting_per_replica: float = Field(
        default=DEFAULT_WAITING_PER_REPLICA,
        gt=0,
        description="The autoscaler's target: requests waiting per replica, on average.",
    )
    # stress stage
    stress_profile: str = "cpu"
    slo_profile: Literal["cpu", "gpu"] = "cpu"
    slo_overrides: dict[str, Any] = Field(default_factory=dict)
    # costs (paddock costs): what one hour of one deployment costs here. 0 by default: a
    # local process runs on a machine paid for anyway; set the node's or GPU's hourly
    # price to see serving costs.
    hourly_price_usd: float = Field(
        default=0.0, ge=0, description="USD per hour of one deployment (0: not metered)."
    )

    def open(self, *, log_dir: Path) -> ServingBackend:
        if self.backend == "local":
            options: dict[str, Any] = {"log_dir": log_dir}
            if self.serving_python:
                options["python"] = Path(self.serving_python)
            return get_backend("local", **options)
        options = {
            "namespace": self.namespace,
            "gpus": self.gpus,
            "kserve": self.kserve,
            "s3_secret_name": self.s3_secret_name,
            "ingress_host": self.ingress_host,
            "ingress_path_prefix": self.ingress_path_prefix,
            "ingress_class": self.ingress_class,
            "ingress_tls_secret": self.ingress_tls_secret,
            "ingress_annotations": self.ingress_annotations,
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "waiting_per_replica": self.waiting_per_replica,
        }
        if self.image:
            options["image"] = self.image
        return get_backend("kubernetes", **options)
