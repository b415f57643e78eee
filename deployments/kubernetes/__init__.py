"""The Kubernetes serving backend: a submission's vLLM server as a Deployment + Service,
or as a KServe InferenceService, rendered from `deployments/templates/`; optionally with
an Ingress and a HorizontalPodAutoscaler beside it.

    naming      names and labels of a submission's objects
    render      ServeSpec + the operator's settings -> manifests (pure)
    secret      the one Secret with the S3 keys a pod references
    api         idempotent apply / read / patch / delete / watch, under the retry policy
    readiness   is it serving yet, and if not, why not
    workloads   Deployment + Service vs InferenceService, behind one interface
    routing     the Ingress that makes a model reachable from outside the cluster
    scaling     the HPA on vLLM's queue, and parking a model at zero replicas
    backend     KubernetesBackend, which ties these together
    defaults    the values the backend and the serving-target block share

Reachability. Without `ingress_host` or `ingress_path_prefix` a model's endpoint is its
Service's cluster DNS name (`http://<name>.<namespace>.svc.cluster.local`), which only
resolves inside the cluster: the control plane (the flows, whose warm-up and stress call
the model, and the API, whose chat relay does) must then run in the cluster, e.g. as the
Kubernetes Jobs of `ops/kubernetes/work-pool.json`. With either set, each model gets an
Ingress and `wait_ready` returns its external URL instead.

Why an Ingress rather than a Gateway API HTTPRoute: networking.k8s.io/v1 Ingress is in
every conformant cluster and served by every common controller, where an HTTPRoute needs
the Gateway API CRDs and a Gateway an operator has set up; and it is a built-in kind, so
kubernetes-validate checks the rendered manifest strictly offline, as it checks the
rest. The HTTPRoute's one clear gain here would be a standard path rewrite, which paddock
does not need: vLLM's `--root-path` makes a model serve under its path prefix, so the
Ingress forwards paths unchanged (`routing`). Moving to an HTTPRoute later means one more
template and kind, nothing else.
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
from .scaling import QUEUE_METRIC
from .secret import s3_secret_manifest

__all__ = [
    "DEFAULT_HOME",
    "DEFAULT_IMAGE",
    "DEFAULT_NAMESPACE",
    "DEFAULT_S3_SECRET_NAME",
    "QUEUE_METRIC",
    "VLLM_BASE_IMAGE",
    "KubernetesBackend",
    "resource_name",
    "s3_secret_manifest",
]
