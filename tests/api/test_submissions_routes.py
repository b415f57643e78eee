"""The submission routes over real HTTP: what they record, start, refuse and hide."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from paddock import crud, lifecycle, timeline
from paddock.api.schemas import StatusPublic
from paddock.models import StageStatus, Status
from paddock.runner import flow_log_path
from tests.api.conftest import Api, Dev, make_submission, wait_settled


def _count(developer: Dev) -> int:
    return len(crud.list_submissions(developer=developer.name))


def test_a_submission_is_recorded_as_its_developer_and_its_run_starts(api: Api, dev: Dev) -> None:
    body = {
        "source": "paddock-test/unreachable",
        "revision": "main",
        "name": "via-api",
        "generation_params": {"temperature": 0.7, "stopping_words": ["\n", "User:"]},
        "prompt_formatter": {"bot_template": "{bot_name} says: {message}\n"},
    }
    with api.client(dev.key) as client:
        response = client.post("/submissions", json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    sub = crud.require_submission(submission_id=created["id"])
    assert sub.developer == dev.name and created["developer"] == dev.name
    assert sub.source == body["source"] and sub.requested_revision == "main"
    assert sub.display_name == "via-api"
    assert sub.generation_params["temperature"] == 0.7
    assert sub.generation_params["top_k"] == 40  # defaults filled in, as the CLI does
    assert sub.prompt_formatter["bot_template"] == "{bot_name} says: {message}\n"
    assert flow_log_path(sub.id).exists()  # the run was started

    report = wait_settled(api, dev.key, sub.id)
    assert report["status"] == "failed" and report["failed_stage"] == "download", report


def test_without_a_formatter_the_models_chat_template_formats_prompts(api: Api, dev: Dev) -> None:
    with api.client(dev.key) as client:
        response = client.post("/submissions", json={"source": "org/m", "dry_run": True})
    assert response.status_code == 200, response.text
    assert response.json()["prompt_formatter"] == {}


def test_dry_run_validates_and_records_nothing(api: Api, dev: Dev) -> None:
    before = _count(dev)
    with api.client(dev.key) as client:
        response = client.post(
            "/submissions", json={"source": "org/model", "dry_run": True, "generation_params": {}}
        )
    assert response.status_code == 200, response.text
    draft = response.json()
    assert draft["developer"] == dev.name and draft["name"] == "model"
    assert draft["generation_params"]["top_p"] == 1.0
    assert _count(dev) == before


BAD_BODIES: list[tuple[str, Any, str]] = [
    ("source-is-a-number", {"source": 0}, "source"),
    ("source-missing", {"name": "x"}, "source"),
    ("bool-as-string", {"source": "org/m", "dry_run": "true"}, "dry_run"),
    ("bool-as-int", {"source": "org/m", "dry_run": 0}, "dry_run"),
    ("number-as-string", {"source": "org/m", "generation_params": {"top_k": "40"}}, "top_k"),
    ("unknown-field", {"source": "org/m", "colour": "red"}, "colour"),
    ("developer-is-not-a-field", {"source": "org/m", "developer": "mallory"}, "developer"),
    ("unknown-param", {"source": "org/m", "generation_params": {"temprature": 1}}, "temprature"),
    ("top-p-too-big", {"source": "org/m", "generation_params": {"top_p": 2}}, "top_p"),
    ("negative-temp", {"source": "org/m", "generation_params": {"temperature": -1}}, "temperature"),
    ("best-of-17", {"source": "org/m", "generation_params": {"best_of": 17}}, "best_of"),
    ("empty-stop-word", {"source": "org/m", "generation_params": {"stopping_words": [""]}}, "stop"),
    ("unknown-template", {"source": "org/m", "prompt_formatter": {"x": "y"}}, "x"),
    ("not-an-object", ["org/m"], "object"),
    ("unknown-source-kind", {"source": "not a source!"}, "neither a hub"),
]


@pytest.mark.parametrize(
    ("body", "names"), [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES]
)
def test_bad_bodies_are_422_naming_the_field(api: Api, dev: Dev, body: Any, names: str) -> None:
    before = _count(dev)
    with api.client(dev.key) as client:
        response = client.post("/submissions", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and names in detail
    assert _count(dev) == before


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"source": "org/m",}', b"\xff\xfe"], ids=str)
def test_malformed_json_is_422_never_500(api: Api, dev: Dev, raw: bytes) -> None:
    with api.client(dev.key) as client:
        response = client.post(
            "/submissions", content=raw, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("invalid request")


def test_the_list_holds_only_your_own(api: Api, dev: Dev, other: Dev) -> None:
    mine = make_submission(dev)
    theirs = make_submission(other)
    with api.client(dev.key) as client:
        listed = client.get("/submissions").json()
        limited = client.get("/submissions", params={"limit": 0})
    ids = [s["id"] for s in listed]
    assert mine in ids and theirs not in ids
    assert {s["developer"] for s in listed} == {dev.name}
    assert limited.status_code == 422 and "limit" in limited.json()["detail"]


def test_status_is_exactly_the_timeline(api: Api, dev: Dev) -> None:
    sub_id = make_submission(dev)
    run = crud.start_stage(submission_id=sub_id, stage="download")
    crud.finish_stage(run_id=run.id or 0, status=StageStatus.succeeded, detail={"output": {"x": 1}})
    failed = crud.start_stage(submission_id=sub_id, stage="sanity")
    crud.finish_stage(run_id=failed.id or 0, status=StageStatus.rejected, detail={"error": "no"})
    crud.add_artifacts(submission_id=sub_id, artifacts=[("s3://b/k/model.tensors", 3, "ab" * 32)])
    crud.add_stress_run(
        submission_id=sub_id,
        endpoint="http://x",
        profile={},
        metrics={"median_ttft_ms": 12.5, "error_rate": 0.0},
        passed=True,
        failures=[],
    )
    with api.client(dev.key) as client:
        response = client.get(f"/submissions/{sub_id}")
    assert response.status_code == 200
    expected = json.loads(json.dumps(timeline.build(sub_id).as_dict()))
    assert response.json() == expected
    assert StatusPublic.model_validate(expected).model_dump(mode="json") == expected


ACTIONS = [("get", ""), ("post", "/deactivate"), ("post", "/teardown"), ("post", "/redeploy")]


@pytest.mark.parametrize(("method", "action"), ACTIONS, ids=[a[1] or "status" for a in ACTIONS])
def test_another_developers_submission_is_404_like_a_missing_one(
    api: Api, dev: Dev, other: Dev, method: str, action: str
) -> None:
    theirs = make_submission(other)
    lifecycle.transition(theirs, Status.inactive)
    with api.client(dev.key) as client:
        foreign = client.request(method.upper(), f"/submissions/{theirs}{action}")
        missing = client.request(method.upper(), f"/submissions/nope{action}")
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["detail"] == missing.json()["detail"].replace("nope", theirs)
    assert crud.require_submission(submission_id=theirs).status == Status.inactive


def test_deactivate_then_teardown(api: Api, dev: Dev) -> None:
    sub_id = make_submission(dev)
    with api.client(dev.key) as client:
        first = client.post(f"/submissions/{sub_id}/deactivate")
        again = client.post(f"/submissions/{sub_id}/deactivate")
        down = client.post(f"/submissions/{sub_id}/teardown")
        back = client.post(f"/submissions/{sub_id}/deactivate")
    assert first.status_code == 200, first.text
    assert first.json() == {"id": sub_id, "status": "inactive", "server_stopped": False}
    assert again.status_code == 200 and again.json()["status"] == "inactive"
    assert down.json()["status"] == "torndown"
    assert back.status_code == 409 and "torndown" in back.json()["detail"]
    assert crud.require_submission(submission_id=sub_id).status == Status.torndown


def test_only_a_stopped_model_is_redeployed(api: Api, dev: Dev) -> None:
    fresh = make_submission(dev)
    with api.client(dev.key) as client:
        refused = client.post(f"/submissions/{fresh}/redeploy")
    assert refused.status_code == 409 and "submitted" in refused.json()["detail"]
    assert not flow_log_path(fresh).exists()


def test_redeploy_starts_a_run_again(api: Api, dev: Dev) -> None:
    sub_id = make_submission(dev, source="paddock-test/unreachable")
    lifecycle.transition(sub_id, Status.inactive)
    with api.client(dev.key) as client:
        response = client.post(f"/submissions/{sub_id}/redeploy")
        twice = client.post(f"/submissions/{sub_id}/redeploy")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "deploying"
    assert twice.status_code == 409  # the first one won
    assert flow_log_path(sub_id).exists()
    deadline = time.monotonic() + 30
    while not flow_log_path(sub_id).stat().st_size and time.monotonic() < deadline:
        time.sleep(0.5)
    assert wait_settled(api, dev.key, sub_id)["status"] == "failed"


def test_the_openapi_document_describes_every_route(api: Api) -> None:
    with api.client() as client:
        doc = client.get("/openapi.json").json()
    operations = {
        (method.upper(), path): op
        for path, methods in doc["paths"].items()
        for method, op in methods.items()
    }
    assert {
        ("POST", "/submissions"),
        ("GET", "/submissions"),
        ("GET", "/submissions/{submission_id}"),
        ("POST", "/submissions/{submission_id}/deactivate"),
        ("POST", "/submissions/{submission_id}/redeploy"),
        ("POST", "/submissions/{submission_id}/teardown"),
        ("GET", "/developers/me"),
        ("GET", "/developers/me/keys"),
        ("POST", "/developers/me/keys"),
        ("DELETE", "/developers/me/keys/{prefix}"),
    } <= set(operations)
    for (_, path), op in operations.items():
        if path.startswith(("/submissions", "/developers")):
            assert op["security"] == [{"HTTPBearer": []}], path
            assert op["description"], path
            assert "401" in op["responses"], path
    create = operations[("POST", "/submissions")]
    assert create["operationId"] == "submissions-create_submission"
    assert create["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ValidationErrorPublic"
    }
    body = doc["components"]["schemas"]["SubmissionCreate"]
    assert body["additionalProperties"] is False and "developer" not in body["properties"]
