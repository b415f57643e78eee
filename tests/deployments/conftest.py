"""The Kubernetes tests' fixtures: a fresh kmock per test, a client on it, a backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from deployments.kubernetes import KubernetesBackend
from tests.deployments.kube import FAST_RETRY, NS, KmockThread
from tests.deployments.kube import k8s as k8s  # a fixture, for the tests here


@pytest.fixture
def api_client(k8s: KmockThread) -> Iterator[client.ApiClient]:
    configuration = client.Configuration()
    configuration.host = k8s.url
    api = client.ApiClient(configuration)
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def backend(api_client: client.ApiClient) -> KubernetesBackend:
    return KubernetesBackend(
        namespace=NS, api_client=api_client, retry=FAST_RETRY, poll_interval=0.3
    )
