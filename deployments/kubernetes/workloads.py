"""The two shapes a served model takes on Kubernetes, behind one interface.

`PlainWorkload` is a Deployment and a ClusterIP Service, both named after the
submission. `KServeWorkload` is a KServe InferenceService whose custom predictor runs the
same pod; KServe creates the Deployment and the `<name>-predictor` Service itself.
A handle records the kind, so `workload_of` finds the shape again in any process.

Either way a Deployment runs the pods, and its replica count is what paddock's autoscaler
and `scale` set; the Ingress, when there is one, points at the Service in front of it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from .readiness import Verdict, judge_inferenceservice, judge_rollout

__all__ = ["KServeWorkload", "PlainWorkload", "Workload", "workload_of"]


class Workload(ABC):
    kind: ClassVar[str]  # of the object that is watched and recorded in the handle
    container: ClassVar[str]  # the vLLM container's name
    templates: ClassVar[tuple[str, ...]]  # rendered and applied in this order
    owned_kinds: ClassVar[tuple[str, ...]]  # what `stop` deletes, in this order

    def service_name(self, name: str) -> str:
        """The Service in front of the pods of the objects called `name`."""
        return name

    def scale_target(self, name: str) -> str:
        """The Deployment that runs the pods of the objects called `name`."""
        return name

    def object_annotations(self, annotations: dict[str, str]) -> dict[str, str]:
        """The top-level objects' annotations, given the pods'."""
        return dict(annotations)

    @abstractmethod
    def judge(self, obj: dict[str, Any]) -> Verdict:
        """Ready, starting or dead, from the watched object alone."""


class PlainWorkload(Workload):
    kind = "Deployment"
    container = "vllm"
    templates = ("deployment.yaml.j2", "service.yaml.j2")
    owned_kinds = ("Service", "Deployment")

    def judge(self, obj: dict[str, Any]) -> Verdict:
        return judge_rollout(obj)


class KServeWorkload(Workload):
    kind = "InferenceService"
    container = "kserve-container"  # the name KServe requires of a custom predictor
    templates = ("inferenceservice.yaml.j2",)
    owned_kinds = ("InferenceService",)

    def service_name(self, name: str) -> str:
        return f"{name}-predictor"

    def scale_target(self, name: str) -> str:
        return f"{name}-predictor"

    def object_annotations(self, annotations: dict[str, str]) -> dict[str, str]:
        # RawDeployment: KServe makes a plain Deployment + Service, no Knative, which
        # also allows the startup probe that loading weights needs. Autoscaler class
        # "external": KServe makes no HPA of its own and leaves the Deployment's replica
        # count to paddock's HPA and `scale`, instead of resetting it on every reconcile.
        return {
            **annotations,
            "serving.kserve.io/deploymentMode": "RawDeployment",
            "serving.kserve.io/autoscalerClass": "external",
        }

    def judge(self, obj: dict[str, Any]) -> Verdict:
        return judge_inferenceservice(obj)


def workload_of(kind: str) -> Workload:
    """The workload whose watched object is of `kind` (a handle's "kind")."""
    for cls in (PlainWorkload, KServeWorkload):
        if cls.kind == kind:
            return cls()
    raise ValueError(f"no workload is a {kind!r}")
