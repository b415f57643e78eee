"""The submission flow through deploy, warm-up and stress on a real vLLM (tiny model).

One module, three vLLM starts: a deploy failure that rolls back and then resumes, a parity
mismatch that rolls back, and teardown.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from flows.submission import submission
from paddock import crud, timeline
from paddock.errors import Rejected, TransientError
from paddock.models import Status
from paddock.serving import stop_serving
from tests.utils.blocks import use_hub, use_s3_store, use_serving
from tests.utils.vllm import chat, needs_vllm, pid_alive

pytestmark = [pytest.mark.vllm, needs_vllm]
PREFIX = "serving-flow"


@pytest.fixture(scope="module", autouse=True)
def _configured(prefect_harness: None, hub: Any, s3: Any) -> None:
    use_hub(hub, s3)
    use_s3_store(s3, PREFIX)
    use_serving()


def _objects(s3: Any) -> list[str]:
    listing = s3.client().list_objects_v2(Bucket="models", Prefix=PREFIX)
    return [o["Key"] for o in listing.get("Contents", [])]


def test_deploy_failure_rolls_back_then_a_rerun_resumes(s3: Any) -> None:
    sub = crud.create_submission(
        developer="tester",
        source="paddock-test/tiny",
        display_name="tiny-resume",
        requested_revision="v1",
    )
    use_serving(serving_python="/nonexistent/python")
    try:
        with pytest.raises(TransientError):
            submission(sub.id)
    finally:
        use_serving()
    failed = timeline.build(sub.id)
    assert failed.status == "failed" and failed.failed_stage == "deploy"
    assert "python" in (failed.reason or "").lower()
    assert _objects(s3) == [], "the upload must be rolled back when deploy fails"
    assert crud.active_deployment(submission_id=sub.id) is None

    endpoint = submission(sub.id)

    report = timeline.build(sub.id)
    assert report.status == "deployed" and report.endpoint == endpoint
    by_name = {s.name: s for s in report.stages}
    for name in ("download", "sanity", "runtime", "serialize"):
        assert by_name[name].status == "skipped", f"{name} should not be redone"
    assert by_name["upload"].status == "succeeded"
    assert report.stress and report.stress["passed"] is True
    assert any(k.endswith("model.tensors") for k in _objects(s3))
    reply = chat(endpoint, "tiny-resume", "Hi", max_tokens=5)
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] != ""

    dep = crud.active_deployment(submission_id=sub.id)
    assert dep is not None and pid_alive(dep.handle["pid"])
    assert stop_serving(sub.id) is True
    assert not pid_alive(dep.handle["pid"])
    assert stop_serving(sub.id) is False  # nothing left to stop


def test_parity_mismatch_fails_warmup_and_removes_the_deployment(s3: Any) -> None:
    from tasks.download import download
    from tasks.runtime import runtime
    from tasks.sanity import sanity

    sub = crud.create_submission(
        developer="tester", source="paddock-test/tiny", display_name="tiny-parity"
    )
    snapshot = download(sub.id)
    sanity(sub.id, snapshot)
    runtime(sub.id, snapshot)
    reference = crud.require_submission(submission_id=sub.id).reference
    assert reference is not None
    first = reference["prompts"][0]
    first["tokens"][0] = (first["tokens"][0] + 7) % 500 + 3  # a token the model did not pick
    first["margins"][0] = 10.0  # and no near-tie excuses it
    crud.set_reference(submission_id=sub.id, reference=reference)

    with pytest.raises(Rejected, match="greedy tokens"):
        submission(sub.id)

    report = timeline.build(sub.id)
    assert report.status == "failed" and report.failed_stage == "warmup"
    runs = [r for r in crud.stage_runs(submission_id=sub.id) if r.stage == "deploy"]
    endpoint = runs[-1].detail["output"]["url"]
    assert crud.active_deployment(submission_id=sub.id) is None
    assert endpoint
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{endpoint}/health", timeout=5)
    # The bundle is shared with the first test's submission (same content, same key), so
    # the rollback must leave it in place.
    assert any(k.endswith("model.tensors") for k in _objects(s3))
    assert crud.require_submission(submission_id=sub.id).status == Status.failed


def test_server_dying_during_warmup_reports_its_log_and_teardown_still_works() -> None:
    import os
    import signal

    from tasks.deploy import deploy
    from tasks.download import download
    from tasks.runtime import runtime
    from tasks.sanity import sanity
    from tasks.serialize import serialize
    from tasks.upload import upload
    from tasks.warmup import warmup

    sub = crud.create_submission(
        developer="tester", source="paddock-test/tiny", display_name="tiny-dies"
    )
    snapshot = download(sub.id)
    sanity(sub.id, snapshot)
    runtime(sub.id, snapshot)
    stored = upload(sub.id, serialize(sub.id, snapshot))
    deployed = deploy(sub.id, stored)
    handle = crud.active_deployment(submission_id=sub.id).handle
    os.killpg(handle["pgid"], signal.SIGKILL)

    with pytest.raises(TransientError, match="died during warm-up") as raised:
        warmup(sub.id, deployed)

    assert "log ends" in str(raised.value) and len(str(raised.value).splitlines()) > 3
    attempts = [r for r in crud.stage_runs(submission_id=sub.id) if r.stage == "warmup"]
    assert len(attempts) == 3 and all(r.status == "failed" for r in attempts)
    assert stop_serving(sub.id) is True  # stopping a dead server succeeds
    assert not pid_alive(handle["pid"])


def test_missed_slo_fails_the_stress_stage_and_rolls_the_deployment_back() -> None:
    sub = crud.create_submission(
        developer="tester", source="paddock-test/tiny", display_name="tiny-slow"
    )
    use_serving(slo_overrides={"ttft_p50_ms": 0.001})
    try:
        with pytest.raises(Rejected, match="SLO"):
            submission(sub.id)
    finally:
        use_serving()

    report = timeline.build(sub.id)
    assert report.status == "failed" and report.failed_stage == "stress"
    assert "TTFT" in (report.reason or "")
    assert report.stress is not None and report.stress["passed"] is False
    deploys = [r for r in crud.stage_runs(submission_id=sub.id) if r.stage == "deploy"]
    endpoint = deploys[-1].detail["output"]["url"]
    assert crud.active_deployment(submission_id=sub.id) is None
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{endpoint}/health", timeout=5)
