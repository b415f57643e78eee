"""How many vLLM replicas serve a model, and who decides.

Between one replica and `max_replicas`, a HorizontalPodAutoscaler does, on vLLM's queue:
`vllm:num_requests_waiting` counts requests a replica has accepted but cannot batch yet,
so it rises exactly when users start to wait, unlike CPU or GPU utilisation, which a
single long generation keeps high. It is a Pods metric read through the custom-metrics
API; a Prometheus adapter serves it under the name `QUEUE_METRIC` (the rule is in
`ops/kubernetes/README.md`).

Below one replica, paddock does. The HPA's own minReplicas is never 0: that needs the
alpha `HPAScaleToZero` feature gate, and a Pods metric could not wake a model anyway,
since with no pod there is no queue to read. So `min_replicas=0` means the model may be
*parked*: `scale(handle, 0)` (paddock's idle cleanup) sets the workload to zero replicas,
which the HPA leaves alone by design (it reports `ScalingDisabled` for a target at zero),
and `scale(handle, n)` wakes it, after which the HPA takes over again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from paddock.errors import ConfigurationError

from .defaults import DEFAULT_MAX_REPLICAS, DEFAULT_MIN_REPLICAS, DEFAULT_WAITING_PER_REPLICA

__all__ = [
    "QUEUE_METRIC",
    "AutoscalerContext",
    "ReplicaSettings",
    "check_scale",
    "desired_replicas",
    "wake_replicas",
]

# vLLM's `vllm:num_requests_waiting` as the adapter renames it: the colon is Prometheus's
# mark of a recording rule, not something to carry into a Kubernetes API path.
QUEUE_METRIC = "vllm_num_requests_waiting"


@dataclass(frozen=True)
class AutoscalerContext:
    """What `horizontalpodautoscaler.yaml.j2` renders."""

    target_name: str  # the apps/v1 Deployment whose replicas it sets
    min_replicas: int
    max_replicas: int
    metric: str
    average_value: str  # a Kubernetes quantity


@dataclass(frozen=True)
class ReplicaSettings:
    min_replicas: int = DEFAULT_MIN_REPLICAS
    max_replicas: int = DEFAULT_MAX_REPLICAS
    waiting_per_replica: float = DEFAULT_WAITING_PER_REPLICA
    metric: str = QUEUE_METRIC

    def __post_init__(self) -> None:
        if self.min_replicas < 0 or self.max_replicas < max(1, self.min_replicas):
            raise ConfigurationError(
                f"need 0 <= min_replicas <= max_replicas and max_replicas >= 1, got "
                f"min_replicas={self.min_replicas}, max_replicas={self.max_replicas}"
            )
        if not self.waiting_per_replica > 0:
            raise ConfigurationError(
                f"waiting_per_replica must be > 0, got {self.waiting_per_replica}"
            )

    @property
    def floor(self) -> int:
        """The replicas a model starts with, and the HPA's minimum: never 0 (see above)."""
        return max(1, self.min_replicas)

    @property
    def autoscaled(self) -> bool:
        return self.max_replicas > self.floor

    def autoscaler(self, target_name: str) -> AutoscalerContext | None:
        if not self.autoscaled:
            return None
        return AutoscalerContext(
            target_name=target_name,
            min_replicas=self.floor,
            max_replicas=self.max_replicas,
            metric=self.metric,
            average_value=_quantity(self.waiting_per_replica),
        )

    def to_handle(self) -> dict[str, int]:
        return {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas}


def _quantity(value: float) -> str:
    """A float as a Kubernetes quantity: whole numbers plain, else in thousandths."""
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000)}m"


def check_scale(handle: Mapping[str, Any], replicas: int) -> None:
    """Refuse a replica count outside the bounds the model was deployed with (kept in its
    handle, so a process that only has the handle enforces them too)."""
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
        raise ConfigurationError(f"replicas must be a whole number >= 0, got {replicas!r}")
    low = int(handle.get("min_replicas", 0))
    high = handle.get("max_replicas")
    if replicas < low:
        raise ConfigurationError(
            f"cannot scale {handle.get('name')} to {replicas}: its serving target keeps at "
            f"least {low} (min_replicas; 0 lets paddock park idle models)"
        )
    if high is not None and replicas > int(high):
        raise ConfigurationError(
            f"cannot scale {handle.get('name')} to {replicas}: its serving target allows at "
            f"most {high} (max_replicas)"
        )


def desired_replicas(deployment: Mapping[str, Any] | None) -> int | None:
    """A Deployment's desired replicas (the API's default of 1 when unset); None when
    there is no Deployment."""
    if deployment is None:
        return None
    replicas = (deployment.get("spec") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)


def wake_replicas(handle: Mapping[str, Any]) -> int:
    """The replicas a parked model wakes to: its floor (`min_replicas`, but at least one),
    read from the handle so the process that wakes it needs no serving target."""
    return max(1, int(handle.get("min_replicas", 0)))
