"""Offline validation of rendered manifests with `kubernetes-validate` (a dev dependency).

Built-in kinds are validated as they are. The KServe InferenceService is a CRD, which
that tool has no schema for: its predictor's pod part is validated as a v1 Pod spec
instead, and its KServe-specific shape is checked by hand.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import kubernetes_validate

from deployments.kubernetes.api import KSERVE_GROUP, KSERVE_VERSION
from deployments.kubernetes.workloads import KServeWorkload

__all__ = ["validate_manifests"]

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
    """One line per manifest saying how it was checked; raises on the first invalid one."""
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

    container = KServeWorkload.container
    need(manifest.get("apiVersion") == f"{KSERVE_GROUP}/{KSERVE_VERSION}", "apiVersion")
    meta = manifest.get("metadata", {})
    need(bool(re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", meta.get("name", ""))), "DNS-1035 name")
    need(len(meta["name"]) <= 45, "name too long for KServe's derived names")
    need(set(manifest) == {"apiVersion", "kind", "metadata", "spec"}, "top-level keys")
    need(set(manifest["spec"]) == {"predictor"}, "spec has only a predictor")
    predictor = manifest["spec"]["predictor"]
    containers = predictor.get("containers", [])
    need(len(containers) == 1, "exactly one predictor container")
    need(containers[0].get("name") == container, f"container named {container}")
    need(isinstance(predictor.get("minReplicas"), int), "minReplicas")
    need(predictor.get("maxReplicas", 0) >= predictor["minReplicas"], "maxReplicas >= minReplicas")
