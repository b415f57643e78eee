"""Asking serving backends about parking: which deployments can be parked, which are.

A backend that parks (`paddock.waking.Parkable`: Kubernetes, its Deployment at zero
replicas) keeps an idle model deployed at no cost, and the router wakes it when users
come back; a local vLLM process cannot be parked, only stopped. Whether a deployment may
go to zero is also the serving target's say, kept in the handle it was deployed with
(`min_replicas` 0), so a target that keeps a replica up is never parked behind its back.

Backends are opened through `_open`, one per name and read, the way the router's waker
opens them; a backend that cannot be opened or asked is taken as "cannot park", which
leaves the model to today's idle handling rather than failing the plan.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from paddock.waking import Parkable

if TYPE_CHECKING:
    from deployments import ServingBackend

__all__ = ["ParkState", "survey", "park"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParkState:
    parkable: bool  # its backend parks and its bounds allow zero replicas
    parked: bool  # it is at zero replicas now


def _open(name: str) -> ServingBackend:
    from deployments import get_backend

    return get_backend(name)


def _allows_zero(handle: Mapping[str, Any]) -> bool:
    return handle.get("min_replicas") == 0


def survey(deployments: Iterable[tuple[int, str, Mapping[str, Any]]]) -> dict[int, ParkState]:
    """Per deployment id (given as id, backend name, handle), whether it can be parked
    and whether it is; one API read per parkable deployment."""
    opened: dict[str, ServingBackend | None] = {}
    out: dict[int, ParkState] = {}
    for dep_id, name, handle in deployments:
        if name not in opened:
            try:
                opened[name] = _open(name)
            except Exception as exc:
                log.warning("cannot open the %s backend to park idle models: %s", name, exc)
                opened[name] = None
        backend = opened[name]
        if not isinstance(backend, Parkable) or not _allows_zero(handle):
            out[dep_id] = ParkState(parkable=False, parked=False)
            continue
        try:
            parked = backend.parked(dict(handle))
        except Exception as exc:  # the applier asks again, and reports what it finds
            log.warning("cannot tell whether deployment %s is parked: %s", dep_id, exc)
            parked = False
        out[dep_id] = ParkState(parkable=True, parked=parked)
    return out


def park(name: str, handle: dict[str, Any]) -> bool:
    """Scale the deployment to zero replicas; False when it already was (nothing done)."""
    backend = _open(name)
    if not isinstance(backend, Parkable):
        raise ValueError(f"the {name} backend cannot park a model")
    if backend.parked(handle):
        return False
    backend.scale(handle, 0)
    return True
