"""A served model reachable from outside the cluster: one Ingress per model.

Two ways to route, both without rewriting paths:

- per-model host, `ingress_host="{name}.models.example.com"` (a wildcard DNS record and,
  for TLS, a wildcard certificate): each model is the root of its own host;
- shared host or none, `ingress_path_prefix="/models"`: each model under
  `/models/<name>`. The pod runs vLLM with `--root-path /models/<name>`, which vLLM sets as
  FastAPI's root path: the router strips it from a request's path when present and
  leaves paths without it alone. So the Ingress forwards paths as they are (`Prefix`, the
  one path type every controller implements alike), with no controller-specific
  rewrite annotation, and the kubelet's probes of `/health` keep working.

Ready means reachable: `wait_routed` returns the external URL only once `GET <url>/health`
answers 200 through the controller, because a controller programs a new route some
seconds after the Ingress appears, and warm-up would otherwise meet its 404s.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from paddock.errors import BackendError, ConfigurationError

from .api import KubeApi, ObjectRef

__all__ = ["IngressContext", "IngressSettings", "Route", "external_url", "wait_routed"]

log = logging.getLogger(__name__)

NAME_PLACEHOLDER = "{name}"
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_PATH_PREFIX = re.compile(r"(/[A-Za-z0-9._~-]+)*")
_DEFAULT_PORT = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Route:
    """Where one model is reached from outside; recorded in the handle, so any process
    can find the URL again."""

    host: str | None
    path: str  # "/" for a per-model host, else "<prefix>/<name>"
    tls: bool

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def root_path(self) -> str | None:
        """vLLM's --root-path: the path prefix the Ingress forwards as it is."""
        return None if self.path == "/" else self.path

    def to_handle(self) -> dict[str, Any]:
        return {"host": self.host, "path": self.path, "tls": self.tls}

    @classmethod
    def from_handle(cls, data: Mapping[str, Any]) -> Route:
        return cls(host=data.get("host"), path=str(data.get("path") or "/"), tls=bool(data["tls"]))


@dataclass(frozen=True)
class IngressContext:
    """What `ingress.yaml.j2` renders."""

    host: str | None
    path: str
    class_name: str | None
    tls_secret: str | None
    annotations: dict[str, str]
    service_name: str
    service_port: int


@dataclass(frozen=True)
class IngressSettings:
    """The operator's routing choices, the same for every model served on a target."""

    host: str | None = None
    path_prefix: str | None = None
    class_name: str | None = None
    tls_secret: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        *,
        host: str | None = None,
        path_prefix: str | None = None,
        class_name: str | None = None,
        tls_secret: str | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> IngressSettings | None:
        """The settings, or None when no Ingress is wanted (neither host nor prefix).

        Every inconsistency is refused here, when the backend is built, rather than
        surfacing as an Ingress the API or the controller rejects mid-deploy."""
        host = host or None
        if host is None and path_prefix is None:
            if class_name or tls_secret or annotations:
                raise ConfigurationError(
                    "ingress_class, ingress_tls_secret and ingress_annotations need "
                    "ingress_host or ingress_path_prefix: without them no Ingress is made"
                )
            return None
        if host is not None:
            _check_host(host)
        prefix = None if path_prefix is None else _normalized_prefix(path_prefix)
        if host is not None and NAME_PLACEHOLDER not in host and prefix is None:
            raise ConfigurationError(
                f"ingress_host {host!r} is the same for every model: add '{NAME_PLACEHOLDER}' "
                f"to it (a host per model) or set ingress_path_prefix (a path per model)"
            )
        if tls_secret and host is None:
            raise ConfigurationError("ingress_tls_secret needs ingress_host: TLS is per host")
        return cls(host, prefix, class_name or None, tls_secret or None, dict(annotations or {}))

    def route(self, name: str) -> Route:
        host = self.host.replace(NAME_PLACEHOLDER, name) if self.host else None
        path = "/" if self.path_prefix is None else f"{self.path_prefix}/{name}"
        return Route(host=host, path=path, tls=self.tls_secret is not None)

    def context(
        self, route: Route, annotations: Mapping[str, str], service: str, port: int
    ) -> IngressContext:
        return IngressContext(
            host=route.host,
            path=route.path,
            class_name=self.class_name,
            tls_secret=self.tls_secret,
            annotations={**annotations, **self.annotations},
            service_name=service,
            service_port=port,
        )


def _check_host(host: str) -> None:
    sample = host.replace(NAME_PLACEHOLDER, "paddock-x")
    if len(sample) > 253 or not _DNS_SUBDOMAIN.fullmatch(sample):
        raise ConfigurationError(
            f"ingress_host {host!r} is not a DNS name (lower-case letters, digits, '-' and "
            f"'.'; '{NAME_PLACEHOLDER}' stands for the model's name; no scheme or port)"
        )


def _normalized_prefix(prefix: str) -> str:
    normalized = "/" + prefix.strip().strip("/")
    normalized = "" if normalized == "/" else normalized
    if not _PATH_PREFIX.fullmatch(normalized):
        raise ConfigurationError(
            f"ingress_path_prefix {prefix!r} must be a URL path like '/models' "
            "(letters, digits and '._~-' between slashes)"
        )
    return normalized


def external_url(route: Route, ingress: Mapping[str, Any]) -> str | None:
    """The model's base URL seen from outside; None while a route without a host waits
    for the controller to publish the Ingress's address."""
    if route.host:
        base = f"{route.scheme}://{route.host}"
    else:
        published = ((ingress.get("status") or {}).get("loadBalancer") or {}).get("ingress")
        address = next((a for a in published or [] if a.get("ip") or a.get("hostname")), None)
        if address is None:
            return None
        host = address.get("hostname") or address["ip"]
        if ":" in host:
            host = f"[{host}]"  # IPv6
        base = f"{route.scheme}://{host}{_port_suffix(address.get('ports'), route.scheme)}"
    return base + (route.root_path or "")


def _port_suffix(ports: list[dict[str, Any]] | None, scheme: str) -> str:
    """The published port, when the controller reports ports and none is the scheme's
    default (ingress-nginx reports none; a NodePort-style controller may)."""
    numbers = [p.get("port") for p in ports or [] if p.get("protocol", "TCP") == "TCP"]
    numbers = [n for n in numbers if isinstance(n, int)]
    if not numbers or _DEFAULT_PORT[scheme] in numbers:
        return ""
    return f":{numbers[0]}"


def wait_routed(
    api: KubeApi, ref: ObjectRef, route: Route, *, timeout: float, interval: float = 1.0
) -> str:
    """The external URL, once the model answers `/health` through the Ingress; raises
    BackendError saying what was last seen when it does not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5.0) as client:
        while True:
            ingress = api.read(ref)
            if ingress is None:
                raise BackendError(f"{ref} disappeared while waiting for it to route")
            url = external_url(route, ingress)
            problem = _probe(client, url) if url else "the controller has published no address"
            if url and problem is None:
                log.info("%s routes %s to the model", ref, url)
                return url
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BackendError(
                    f"{ref} does not reach the model after {timeout:.1f}s: {problem} "
                    f"(is the ingress class right, and does the name resolve from here?)"
                )
            time.sleep(min(interval, remaining))


def _probe(client: httpx.Client, url: str) -> str | None:
    """None when `<url>/health` answers 200, else what happened instead."""
    try:
        response = client.get(f"{url}/health")
    except httpx.HTTPError as exc:
        return f"GET {url}/health failed: {exc}"
    if response.status_code != 200:
        return f"GET {url}/health answered {response.status_code}"
    return None
