"""Kubernetes test machinery: kmock served on a thread, and the controller's part played
by hand (kmock reconciles nothing, so tests patch `status` and create pods themselves).

kmock has no PUT, no namespaces API and ignores selectors; the backend copes with all
three.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import kmock
import pytest
from kubernetes import client

from deployments.base import ServeSpec
from deployments.kubernetes import DEFAULT_IMAGE
from paddock.retry import RetryPolicy

__all__ = [
    "FAST_RETRY",
    "NS",
    "SECRET_VALUES",
    "KmockThread",
    "add_pod",
    "make_spec",
    "mark_ready",
]

NS = "paddock-test"
SECRET_VALUES = ("AKIAEXAMPLEKEY123", "wJalrXUtnFEMI-super-secret-value")
FAST_RETRY = RetryPolicy(retries=2, base_seconds=0.01)  # 3 attempts


# --------------------------------------------------------------------------- kmock on a thread


class KmockThread:
    """kmock's KubernetesEmulator + Server, served from an event loop on a daemon thread."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.emulator: kmock.KubernetesEmulator
        self.url = ""
        self._thread = threading.Thread(target=self._run, name="kmock", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
            self.emulator = emulator
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def start(self) -> KmockThread:
        self._thread.start()
        if not self._ready.wait(10) or self._error:
            raise RuntimeError(f"kmock did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def on_loop(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the server's loop (kmock's DSL is not thread-safe) and return its result."""
        assert self._loop is not None
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def call() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(call)
        return future.result(5)

    def requests(self, method: str, path_regex: str) -> list[Any]:
        pattern = re.compile(path_regex)
        return self.on_loop(
            lambda: [
                r
                for r in list(self.emulator)
                if r.method == method and pattern.fullmatch(r.url.path)
            ]
        )


def make_spec(submission_id: str = "4f1c2d3e-0000-4000-8000-0123456789ab", **kw: Any) -> ServeSpec:
    defaults: dict[str, Any] = dict(
        served_name="tiny-llama",
        bundle_uri="s3://paddock-models/bundles/sha256-abc/",
        config_files=("config.json", "tokenizer.json", "tokenizer_config.json"),
        s3_endpoint="http://minio.storage:9000",
        dtype="float32",
        max_model_len=1024,
        generation_defaults={"temperature": 0.7, "top_k": 40},
        # The local backend's way of passing S3 keys; must never reach a manifest.
        env={
            "S3_ACCESS_KEY_ID": SECRET_VALUES[0],
            "S3_SECRET_ACCESS_KEY": SECRET_VALUES[1],
            "VLLM_LOGGING_LEVEL": "INFO",
        },
    )
    defaults.update(kw)
    return ServeSpec(submission_id=submission_id, **defaults)


def mark_ready(api_client: client.ApiClient, name: str, *, delay: float = 0.0) -> threading.Thread:
    """Play the Deployment controller: after `delay`, patch the status to a finished rollout."""

    def run() -> None:
        time.sleep(delay)
        client.AppsV1Api(api_client).patch_namespaced_deployment_status(
            name,
            NS,
            {
                "status": {
                    "observedGeneration": 1,
                    "replicas": 1,
                    "updatedReplicas": 1,
                    "readyReplicas": 1,
                    "availableReplicas": 1,
                }
            },
        )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def add_pod(api_client: client.ApiClient, name: str, pod_name: str, status: dict[str, Any]) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name,
            "namespace": NS,
            "labels": {"app.kubernetes.io/instance": name},
        },
        "spec": {"containers": [{"name": "vllm", "image": DEFAULT_IMAGE}]},
    }
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(NS, pod)
    core.patch_namespaced_pod_status(pod_name, NS, {"status": status})


@pytest.fixture
def k8s() -> Iterator[KmockThread]:
    """A fresh kmock for one test (the Kubernetes tests' and the router's)."""
    server = KmockThread().start()
    try:
        yield server
    finally:
        server.stop()
