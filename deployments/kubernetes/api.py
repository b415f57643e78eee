"""Kubernetes API calls through the official `kubernetes` client, made idempotent.

`apply` creates an object, or merge-patches it when it exists (409); `delete` counts 404
as done; `read` answers None for 404. Every call runs under the project's retry policy,
which retries what may pass (5xx, 429, connection errors) and nothing else; whatever is
left becomes a `BackendError` whose message names the call and the API's own reason.

The client is imported on first use: building a backend, or importing this package for
its defaults, costs no client import.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Collection, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import urllib3

from paddock.errors import BackendError
from paddock.retry import RetryPolicy, is_transient

from .naming import INSTANCE_LABEL

if TYPE_CHECKING:
    from kubernetes.client import ApiClient
    from kubernetes.client.exceptions import ApiException

__all__ = ["API_RETRY", "KSERVE_GROUP", "KSERVE_PLURAL", "KSERVE_VERSION", "KubeApi", "ObjectRef"]

T = TypeVar("T")
log = logging.getLogger(__name__)

KSERVE_GROUP, KSERVE_VERSION, KSERVE_PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"

# The built-in kinds paddock applies: kind -> (client API class, snake_case plural of the
# client's `<verb>_namespaced_<plural>` methods).
_BUILTIN = {
    "Deployment": ("AppsV1Api", "deployment"),
    "Service": ("CoreV1Api", "service"),
    "Ingress": ("NetworkingV1Api", "ingress"),
    "HorizontalPodAutoscaler": ("AutoscalingV2Api", "horizontal_pod_autoscaler"),
}

# 4 attempts over ~3.5 s: an API server blip passes, a dead one is reported quickly.
API_RETRY = RetryPolicy(retries=3, base_seconds=0.5, max_seconds=8.0)


@dataclass(frozen=True)
class ObjectRef:
    kind: str  # a key of _BUILTIN, or "InferenceService"
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class _Ops:
    """One kind's calls. Built-in kinds take (name, namespace, …); custom objects take
    (group, version, namespace, plural, name, …): `scope` holds what precedes the name."""

    create: Callable[..., Any]
    patch: Callable[..., Any]
    read: Callable[..., Any]
    delete: Callable[..., Any]
    list: Callable[..., Any]
    scope: tuple[str, ...]
    custom: bool

    def named(self, name: str) -> tuple[str, ...]:
        """The arguments that name one object."""
        return (*self.scope, name) if self.custom else (name, *self.scope)

    @property
    def merge_patch(self) -> dict[str, str]:
        """What makes a patch a JSON merge patch: the client sends a dict body to a
        custom object as one by itself, built-in kinds need the content type."""
        return {} if self.custom else {"_content_type": "application/merge-patch+json"}


class KubeApi:
    """The calls the backend makes, on one lazily configured `ApiClient`."""

    def __init__(
        self, api_client: ApiClient | None = None, *, retry: RetryPolicy = API_RETRY
    ) -> None:
        self.retry = retry
        self._client = api_client
        self._lock = threading.Lock()

    @property
    def client(self) -> ApiClient:
        """The given client, or one configured in-cluster or from the kubeconfig."""
        with self._lock:
            if self._client is None:
                from kubernetes import client, config

                configuration = client.Configuration()
                try:
                    config.load_incluster_config(client_configuration=configuration)
                except config.ConfigException:
                    try:
                        config.load_kube_config(client_configuration=configuration)
                    except (config.ConfigException, OSError) as exc:
                        raise BackendError(
                            f"no Kubernetes configuration (not in a cluster, no usable "
                            f"kubeconfig): {exc}"
                        ) from exc
                self._client = client.ApiClient(configuration)
            return self._client

    # ------------------------------------------------------------------ calls

    def call(self, what: str, fn: Callable[[], T], *, expect: Collection[int] = ()) -> T:
        """`fn()` under the retry policy. An API status in `expect` is re-raised as the
        client's ApiException for the caller; any other failure becomes BackendError."""
        from kubernetes.client.exceptions import ApiException

        attempts = 0

        def attempt() -> T:
            nonlocal attempts
            attempts += 1
            return fn()

        try:
            return self.retry.call(attempt, what=what)
        except ApiException as exc:
            if exc.status in expect:
                raise
            tried = f" after {attempts} attempts" if is_transient(exc) else ""
            raise BackendError(
                f"{what}: Kubernetes API answered {exc.status} {exc.reason}{tried}: "
                f"{api_message(exc)}"
            ) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise BackendError(
                f"{what}: Kubernetes API unreachable after {attempts} attempts: {exc}"
            ) from exc

    def to_dict(self, obj: Any) -> dict[str, Any]:
        """A client model as the API's camelCase JSON object."""
        if isinstance(obj, dict):
            return obj
        result: dict[str, Any] = self.client.sanitize_for_serialization(obj)
        return result

    def _ops(self, kind: str, namespace: str) -> _Ops:
        from kubernetes import client

        if kind in _BUILTIN:
            api_class, plural = _BUILTIN[kind]
            api = getattr(client, api_class)(self.client)

            def verb(name: str) -> Callable[..., Any]:
                method: Callable[..., Any] = getattr(api, f"{name}_namespaced_{plural}")
                return method

            ops = (verb("create"), verb("patch"), verb("read"), verb("delete"), verb("list"))
            return _Ops(*ops, scope=(namespace,), custom=False)
        if kind == "InferenceService":
            custom = client.CustomObjectsApi(self.client)
            return _Ops(
                custom.create_namespaced_custom_object,
                custom.patch_namespaced_custom_object,
                custom.get_namespaced_custom_object,
                custom.delete_namespaced_custom_object,
                custom.list_namespaced_custom_object,
                scope=(KSERVE_GROUP, KSERVE_VERSION, namespace, KSERVE_PLURAL),
                custom=True,
            )
        raise BackendError(f"cannot handle kind {kind}")

    # ------------------------------------------------------------------ objects

    def apply(self, manifest: dict[str, Any], *, gone_wait: float = 30.0) -> None:
        """Create the object, or on 409 merge-patch the existing one to the manifest.

        A merge patch replaces lists (containers, args, env) wholesale, so the result
        equals the rendered manifest for every field rendered; and it needs no PUT, which
        not every API server (kmock) serves. An object still being deleted is waited for
        and created again, for up to `gone_wait` seconds.
        """
        from kubernetes.client.exceptions import ApiException

        meta = manifest["metadata"]
        ref = ObjectRef(manifest["kind"], meta["namespace"], meta["name"])
        ops = self._ops(ref.kind, ref.namespace)
        deadline = time.monotonic() + gone_wait
        while True:
            try:
                self.call(
                    f"create {ref}", lambda: ops.create(*ops.scope, manifest), expect=(404, 409)
                )
                return
            except ApiException as exc:
                if exc.status == 404:
                    raise BackendError(
                        f"create {ref}: {_missing(ref)}: {api_message(exc)}"
                    ) from exc
            # 409: it exists. Patch it to the rendered state...
            try:
                current = self.call(
                    f"patch {ref}",
                    lambda: ops.patch(*ops.named(ref.name), manifest, **ops.merge_patch),
                    expect=(404,),
                )
            except ApiException:
                if time.monotonic() > deadline:
                    raise BackendError(
                        f"{ref} keeps vanishing between create (409) and patch (404); "
                        f"giving up after {gone_wait:.0f}s"
                    ) from None
                continue  # deleted between our create and patch: create again
            # ...unless it is on its way out (a previous stop): wait for it to go.
            if not self.to_dict(current).get("metadata", {}).get("deletionTimestamp"):
                log.info("%s already existed: patched", ref)
                return
            if time.monotonic() > deadline:
                raise BackendError(
                    f"{ref} is still being deleted after {gone_wait:.0f}s; cannot re-create it"
                )
            time.sleep(min(1.0, self.retry.base_seconds))

    def delete(self, ref: ObjectRef) -> bool:
        """Delete the object (its dependents in the background); False if it was gone."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        ops = self._ops(ref.kind, ref.namespace)
        body = client.V1DeleteOptions(propagation_policy="Background")
        try:
            self.call(
                f"delete {ref}", lambda: ops.delete(*ops.named(ref.name), body=body), expect=(404,)
            )
        except ApiException:
            return False
        return True

    def read(self, ref: ObjectRef) -> dict[str, Any] | None:
        """The object as the API's JSON, or None when it does not exist."""
        from kubernetes.client.exceptions import ApiException

        ops = self._ops(ref.kind, ref.namespace)
        try:
            obj = self.call(f"read {ref}", lambda: ops.read(*ops.named(ref.name)), expect=(404,))
        except ApiException:
            return None
        return self.to_dict(obj)

    def patch(self, ref: ObjectRef, body: dict[str, Any]) -> dict[str, Any] | None:
        """Merge-patch an existing object (never creates one); None when it does not exist."""
        from kubernetes.client.exceptions import ApiException

        ops = self._ops(ref.kind, ref.namespace)
        try:
            obj = self.call(
                f"patch {ref}",
                lambda: ops.patch(*ops.named(ref.name), body, **ops.merge_patch),
                expect=(404,),
            )
        except ApiException:
            return None
        return self.to_dict(obj)

    def watch(
        self, ref: ObjectRef, seconds: float
    ) -> Generator[tuple[str, dict[str, Any]], None, None]:
        """The object's watch events, (type, object), for up to `seconds`.

        Ends quietly when the window closes or the API has a passing fault (the caller
        reads the object again anyway); other API errors raise BackendError.
        """
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        ops = self._ops(ref.kind, ref.namespace)
        stream = watch.Watch()
        try:
            for event in stream.stream(
                ops.list,
                *ops.scope,
                field_selector=f"metadata.name={ref.name}",
                timeout_seconds=max(1, int(seconds + 0.999)),
                _request_timeout=(5, max(0.1, seconds)),
            ):
                kind, obj = str(event.get("type", "")), self.to_dict(event.get("object"))
                if kind != "ERROR" and (obj.get("metadata") or {}).get("name") != ref.name:
                    continue  # not every API server (kmock) honours field selectors
                yield kind, obj
        except (urllib3.exceptions.HTTPError, TimeoutError, OSError):
            return  # read timeout: the window is over
        except ApiException as exc:
            if is_transient(exc) or exc.status == 410:  # 410: resource version too old
                time.sleep(min(seconds, self.retry.base_seconds))
                return
            raise BackendError(
                f"watch {ref}: Kubernetes API answered {exc.status} {exc.reason}: "
                f"{api_message(exc)}"
            ) from exc
        finally:
            stream.stop()

    # ------------------------------------------------------------------ pods

    def pods(self, namespace: str, instance: str) -> list[dict[str, Any]]:
        """The pods of one instance, newest first; [] when there are none or the API
        refuses to list them (pods only explain, they never decide)."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        core = client.CoreV1Api(self.client)
        selector = f"{INSTANCE_LABEL}={instance}"
        try:
            result = self.call(
                f"list pods of {instance}",
                lambda: core.list_namespaced_pod(namespace, label_selector=selector),
                expect=(403, 404),
            )
        except (ApiException, BackendError):
            return []
        pods = [self.to_dict(p) for p in (result.items or [])]
        # Filter again here: not every API server (kmock) honours label selectors.
        pods = [
            p
            for p in pods
            if p.get("metadata", {}).get("labels", {}).get(INSTANCE_LABEL) == instance
        ]
        pods.sort(key=lambda p: p.get("metadata", {}).get("creationTimestamp") or "", reverse=True)
        return pods

    def pod_log(self, namespace: str, pod: str, container: str, *, lines: int) -> str:
        """The last `lines` of a container's log; "" when the API refuses it."""
        from kubernetes import client

        core = client.CoreV1Api(self.client)

        def fetch() -> urllib3.BaseHTTPResponse:
            # Raw bytes: the log is text/plain, which the client's deserializer need not
            # understand (and a log may not be valid UTF-8). Unloaded, the client returns
            # urllib3's response, whatever its annotation (str) says.
            raw = core.read_namespaced_pod_log(
                pod, namespace, container=container, tail_lines=lines, _preload_content=False
            )
            return cast(urllib3.BaseHTTPResponse, raw)

        response = self.call(f"read log of {pod}", fetch)
        try:
            if response.status >= 400:
                return ""
            data = response.data
        finally:
            response.release_conn()
        return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def api_message(exc: ApiException) -> str:
    """The API's own reason from an ApiException's JSON Status body."""
    try:
        body = json.loads(exc.body or "")
        return str(body.get("message") or exc.reason)
    except (ValueError, AttributeError, TypeError):
        return str(getattr(exc, "reason", "") or exc)


def _missing(ref: ObjectRef) -> str:
    if ref.kind == "InferenceService":
        return (
            f"the API has no {KSERVE_GROUP}/{KSERVE_VERSION} {KSERVE_PLURAL} (is KServe "
            f"installed?) or namespace {ref.namespace!r} is missing"
        )
    if ref.kind == "HorizontalPodAutoscaler":
        return (
            f"the API has no autoscaling/v2 (Kubernetes >= 1.23) or namespace "
            f"{ref.namespace!r} is missing"
        )
    return f"namespace {ref.namespace!r} is missing"
