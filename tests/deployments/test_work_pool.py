"""`ops/kubernetes/`: the work pool's base job template, checked the ways Prefect and
prefect-kubernetes check it, and the Job it renders, validated strictly offline; and the
flows' RBAC, which must allow every call the serving backend makes.

prefect-kubernetes is needed only here (a dev dependency); without it these tests skip.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from uuid import uuid4

import jsonschema
import kubernetes_validate
import pytest
import yaml

pytest.importorskip("prefect_kubernetes")

from prefect.client.schemas.objects import FlowRun  # noqa: E402
from prefect.server.schemas.actions import WorkPoolCreate  # noqa: E402
from prefect_kubernetes.worker import (  # noqa: E402
    KubernetesWorker,
    KubernetesWorkerJobConfiguration,
    KubernetesWorkerVariables,
)

OPS = Path(__file__).resolve().parents[2] / "ops" / "kubernetes"
SECRET_ENV = {
    "PADDOCK_DATABASE_URL": "database-url",
    "PADDOCK_S3_ACCESS_KEY_ID": "s3-access-key-id",
    "PADDOCK_S3_SECRET_ACCESS_KEY": "s3-secret-access-key",
    "HF_TOKEN": "hf-token",
}
# prefect-kubernetes requires these two in the pod spec of every template (its own
# default puts them there too), though they are Job fields: the API server drops them
# with a warning. Strict validation is of everything else.
PREFECT_MISPLACED_POD_FIELDS = ("parallelism", "completions")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((OPS / "work-pool.json").read_text())
    return data


def defaults(template: dict[str, Any]) -> dict[str, Any]:
    return {
        name: spec["default"]
        for name, spec in template["variables"]["properties"].items()
        if "default" in spec
    }


class NoPrefectApi:
    """Stands in for the Prefect client: the template references no blocks or
    variables, so rendering it must not call the API at all."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"rendering the template called the Prefect API ({name})")


def render_job(template: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The Job the worker would create, through prefect-kubernetes' own code path."""
    configuration = asyncio.run(
        KubernetesWorkerJobConfiguration.from_template_and_values(
            template, values, client=NoPrefectApi()
        )
    )
    configuration.prepare_for_flow_run(
        flow_run=FlowRun(flow_id=uuid4(), name="calm-otter"), deployment=None, flow=None
    )
    assert configuration.namespace == values.get("namespace", "paddock")
    job: dict[str, Any] = configuration.job_manifest
    return job


def test_prefect_accepts_it_as_a_kubernetes_base_job_template(template: dict[str, Any]) -> None:
    # What the server checks on `prefect work-pool create --base-job-template`.
    pool = WorkPoolCreate(name="paddock", type="kubernetes", base_job_template=template)
    assert pool.base_job_template == template
    jsonschema.Draft202012Validator.check_schema(template["variables"])
    jsonschema.validate(defaults(template), template["variables"])


def test_it_is_prefect_kubernetes_shape(template: dict[str, Any]) -> None:
    theirs = KubernetesWorker.get_default_base_job_template()
    ours_config, their_config = template["job_configuration"], theirs["job_configuration"]
    assert set(ours_config) <= set(KubernetesWorkerJobConfiguration.model_fields)
    assert set(ours_config) == set(their_config) - {"cluster_config"}  # the worker is in-cluster
    for key in set(ours_config) - {"job_manifest"}:
        assert ours_config[key] == their_config[key]
    # every variable prefect-kubernetes defines keeps its type, and our defaults are
    # values its own variables model accepts
    ours, their_props = template["variables"]["properties"], theirs["variables"]["properties"]
    shared = set(ours) & set(their_props)
    assert shared == set(their_props) - {"cluster_config"}
    ignore = {"default", "description", "title", "examples"}
    for name in shared:
        assert {k: v for k, v in ours[name].items() if k not in ignore} == {
            k: v for k, v in their_props[name].items() if k not in ignore
        }, name
    KubernetesWorkerVariables(**{k: v for k, v in defaults(template).items() if k in shared})


@pytest.mark.parametrize("version", ["1.29.0", kubernetes_validate.latest_version()])
def test_rendered_job_is_valid_and_takes_secrets_by_reference(
    template: dict[str, Any], version: str
) -> None:
    values = {"env": {"PADDOCK_STORE_URL": "s3://paddock-models/bundles"}}
    job = render_job(template, values)
    pod = job["spec"]["template"]["spec"]
    for field in PREFECT_MISPLACED_POD_FIELDS:
        assert pod.pop(field) == 1
    kubernetes_validate.validate(job, version, strict=True)

    assert job["metadata"]["namespace"] == "paddock"
    assert job["metadata"]["generateName"].startswith("calm-otter")
    assert job["spec"]["ttlSecondsAfterFinished"] == 86400 and job["spec"]["backoffLimit"] == 0
    assert pod["serviceAccountName"] == "paddock-flows"
    (container,) = pod["containers"]
    assert container["image"] == "paddock-control-plane:0.1.0"
    assert container["args"][:3] == ["prefect", "flow-run", "execute"]
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "8Gi"},
        "limits": {"cpu": "4", "memory": "16Gi"},
    }
    env = {e["name"]: e for e in container["env"]}
    for name, key in SECRET_ENV.items():
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "paddock-control-plane"
        assert env[name]["valueFrom"]["secretKeyRef"]["key"] == key
        assert "value" not in env[name]
    assert "optional" not in env["PADDOCK_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    # the variable's defaults and the deployment's own env, merged
    assert env["PADDOCK_SERVING_BACKEND"]["value"] == "kubernetes"
    assert env["PADDOCK_HOME"]["value"] == "/var/lib/paddock"
    assert env["PADDOCK_STORE_URL"]["value"] == "s3://paddock-models/bundles"
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == env["PADDOCK_HOME"]["value"]
    assert pod["volumes"] == [{"name": "paddock-home", "emptyDir": {"sizeLimit": "50Gi"}}]


def test_job_variables_override_the_defaults(template: dict[str, Any]) -> None:
    job = render_job(
        template,
        {
            "namespace": "models",
            "image": "registry.example/paddock:2",
            "paddock_secret_name": "paddock-prod",
            "memory_limit": "64Gi",
            "work_dir_size": "200Gi",
        },
    )
    pod = job["spec"]["template"]["spec"]
    assert job["metadata"]["namespace"] == "models"
    container = pod["containers"][0]
    assert container["image"] == "registry.example/paddock:2"
    assert container["resources"]["limits"]["memory"] == "64Gi"
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
    assert refs == {"paddock-prod"}
    assert pod["volumes"][0]["emptyDir"]["sizeLimit"] == "200Gi"


def test_flows_may_make_every_call_the_serving_backend_makes() -> None:
    docs = [d for d in yaml.safe_load_all((OPS / "rbac.yaml").read_text()) if d]
    for doc in docs:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    by_kind = {d["kind"]: d for d in docs}
    allowed = {
        (group, resource): set(rule["verbs"])
        for rule in by_kind["Role"]["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    apply = {"get", "list", "watch", "create", "patch", "delete"}
    for key in [
        ("apps", "deployments"),
        ("", "services"),
        ("networking.k8s.io", "ingresses"),
        ("autoscaling", "horizontalpodautoscalers"),
        ("serving.kserve.io", "inferenceservices"),
    ]:
        assert apply <= allowed[key], key
    assert {"get", "list"} <= allowed[("", "pods")] and "get" in allowed[("", "pods/log")]
    account = by_kind["ServiceAccount"]["metadata"]["name"]
    assert by_kind["RoleBinding"]["subjects"][0]["name"] == account
    work_pool = json.loads((OPS / "work-pool.json").read_text())
    assert work_pool["variables"]["properties"]["service_account_name"]["default"] == account
