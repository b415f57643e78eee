"""The one small interface every serving backend implements.

A backend turns a `ServeSpec` (what to serve, from where) into a running OpenAI-compatible
vLLM endpoint. It returns a JSON-able *handle* that is stored in the database, so a later
process (the CLI, a cleanup flow) can find, check or stop the deployment without the
process that started it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from paddock.errors import BackendError, ConfigurationError

__all__ = ["ServeSpec", "ServingBackend", "BackendError", "BackendState", "get_backend"]

BackendState = Literal["starting", "ready", "dead", "stopped"]


@dataclass(frozen=True)
class ServeSpec:
    submission_id: str
    served_name: str  # the model name clients send in requests
    # A directory-shaped bundle in the model store: model.tensors beside config.json,
    # tokenizer files and the chat template. Local path or s3://bucket/prefix/.
    bundle_uri: str
    # Small files of the bundle (config, tokenizer, chat template) to place in vLLM's
    # --model directory when the tensors stream from S3.
    config_files: tuple[str, ...] = ()
    # A local copy of those files, for backends that run on this machine.
    local_config_dir: Path | None = None
    s3_endpoint: str | None = None
    dtype: str = "float32"
    max_model_len: int = 2048
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    # The submission's generation parameters as the server's defaults (vLLM's
    # --override-generation-config), so a client that sets none still gets them.
    generation_defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def tensorizer_uri(self) -> str:
        return self.bundle_uri.rstrip("/") + "/model.tensors"


class ServingBackend(Protocol):
    name: str

    def start(self, spec: ServeSpec) -> dict[str, Any]:
        """Start serving; returns the handle to store. Raises BackendError."""

    def wait_ready(self, handle: dict[str, Any], *, timeout: float) -> str:
        """Block until the endpoint answers /health; returns its base URL (…/v1 not included)."""

    def status(self, handle: dict[str, Any]) -> BackendState: ...

    def logs(self, handle: dict[str, Any], *, lines: int = 40) -> str: ...

    def stop(self, handle: dict[str, Any]) -> None:
        """Stop and remove everything `start` created; succeeds if it is already gone."""

    def replicas(self, handle: dict[str, Any]) -> int:
        """How many replicas the deployment is set to run now; 0 when parked or gone."""

    def scale(self, handle: dict[str, Any], replicas: int) -> None:
        """Set the replica count; 0 parks an idle model without removing it, so the handle
        stays valid and a later `scale` serves it again. Raises ConfigurationError where
        the backend cannot scale, or the count is outside the serving target's bounds."""


_BACKENDS = {
    "local": "deployments.local:LocalBackend",
    "kubernetes": "deployments.kubernetes:KubernetesBackend",
}


def get_backend(name: str, **options: Any) -> ServingBackend:
    try:
        module_name, cls_name = _BACKENDS[name].split(":")
    except KeyError:
        raise ConfigurationError(
            f"unknown serving backend {name!r}; choose one of {sorted(_BACKENDS)}"
        ) from None
    cls = getattr(importlib.import_module(module_name), cls_name)
    backend: ServingBackend = cls(**options)
    return backend
