"""The Kubernetes serving backend: a submission's vLLM server as a Deployment + Service,
or as a KServe InferenceService, rendered from `deployments/templates/`.

    naming      names and labels of a submission's objects
    render      ServeSpec + the operator's settings -> manifests (pure)
    secret      the one Secret with the S3 keys a pod references
    api         idempotent apply / read / delete / watch, under the retry policy
    readiness   is it serving yet, and if not, why not
    workloads   Deployment + Service vs InferenceService, behind one interface
    backend     KubernetesBackend, which ties these together
    defaults    the values the backend and the serving-target block share
"""

from __future__ import annotations

from .backend import KubernetesBackend
from .defaults import (
    DEFAULT_HOME,
    DEFAULT_IMAGE,
    DEFAULT_NAMESPACE,
    DEFAULT_S3_SECRET_NAME,
    VLLM_BASE_IMAGE,
)
from .naming import resource_name
from .secret import s3_secret_manifest

__all__ = [
    "DEFAULT_HOME",
    "DEFAULT_IMAGE",
    "DEFAULT_NAMESPACE",
    "DEFAULT_S3_SECRET_NAME",
    "VLLM_BASE_IMAGE",
    "KubernetesBackend",
    "resource_name",
    "s3_secret_manifest",
]
