"""The Prefect flow end to end: figures stored, artifacts made, the gate enforced."""

from __future__ import annotations

import pytest

from paddock import crud
from paddock.errors import Rejected
from tests.stress.fakeserver import FakeServer

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_flow_passes_and_stores_a_stress_run(server: FakeServer) -> None:
    from prefect.client.orchestration import get_client

    from flows.stress import stress

    sub = crud.create_submission(developer="dev", source="hub:x/y", display_name="y")
    result = stress(
        server.url,
        "fake",
        profile={"preset": "smoke", "kind": "sweep", "sweep_concurrencies": [1, 2]},
        slo_profile="cpu",
        submission_id=sub.id,
    )
    assert result.passed and result.completed == 8
    run = crud.latest_stress_run(submission_id=sub.id)
    assert run is not None and run.passed and run.failures == [] and run.id == result.stress_run_id
    assert [s["concurrency"] for s in run.metrics["steps"]] == [1, 2]
    assert run.metrics["median_ttft_ms"] == result.median_ttft_ms
    assert run.profile["kind"] == "sweep" and run.endpoint == server.url

    async def artifacts() -> list[str]:
        async with get_client() as client:
            return [a.key for a in await client.read_artifacts()]

    import asyncio

    keys = asyncio.run(artifacts())
    assert f"stress-{sub.id}" in keys and f"stress-{sub.id}-report" in keys


def test_flow_rejects_a_model_that_misses_its_slo() -> None:
    from flows.stress import stress

    sub = crud.create_submission(developer="dev", source="hub:x/slow", display_name="slow")
    with FakeServer(first_token_delay_s=0.05, healthy_first=1) as srv:
        missed = r"missed its cpu SLO under load: median TTFT \d+ ms > 10 ms"
        with pytest.raises(Rejected, match=missed):
            stress(
                srv.url,
                "fake",
                profile="smoke",
                slo_overrides={"ttft_p50_ms": 10},
                submission_id=sub.id,
            )
    run = crud.latest_stress_run(submission_id=sub.id)  # stored before the gate raised
    assert run is not None and not run.passed
    assert run.failures and run.failures[0].startswith("median TTFT")
    assert run.metrics["slo"]["ttft_p50_ms"] == 10


def test_flow_invalid_profile_sends_nothing(server: FakeServer) -> None:
    from flows.stress import stress
    from paddock.errors import ProfileError

    with pytest.raises(ProfileError, match="concurrency"):
        stress(server.url, "fake", profile={"kind": "concurrent", "concurrency": 0})
    assert server.requests_seen == 0


def test_stress_requests_are_shaped_as_the_submissions_users_are_served() -> None:
    """The prompt formatter and generation parameters reach every stress request."""
    from flows.stress import _submission_shape

    sub = crud.create_submission(
        developer="dev",
        source="hub:x/fmt",
        display_name="Ada",
        generation_params={"temperature": 0.3, "top_k": 7, "stopping_words": ["###"]},
        prompt_formatter={"prompt_template": "{prompt}\n", "response_template": "{bot_name}:"},
    )
    shape = _submission_shape(sub.id, "ada")

    path, body = shape([{"role": "user", "content": "Hello there"}])

    assert path == "/v1/completions"
    assert body["prompt"].endswith("User: Hello there\nAda:")
    assert (body["temperature"], body["top_k"], body["stop"]) == (0.3, 7, ["###"])

    plain = crud.create_submission(developer="dev", source="hub:x/plain", display_name="p")
    path, body = _submission_shape(plain.id, "p")([{"role": "user", "content": "Hi"}])
    assert path == "/v1/chat/completions" and body["messages"][-1]["content"] == "Hi"


def test_the_stress_stage_leaves_probing_and_warming_to_the_warm_up_stage() -> None:
    from flows.stress import after_warmup
    from paddock.stress.profiles import load_profile

    cpu = load_profile(after_warmup("cpu"))
    assert not cpu.test_request and cpu.warmup_requests == 0
    # what is measured stays the preset's
    assert cpu.model_dump(exclude={"test_request", "warmup_requests"}) == load_profile(
        "cpu"
    ).model_dump(exclude={"test_request", "warmup_requests"})
    # an operator who asks for a warm-up in the serving target's profile gets it
    mine = load_profile(after_warmup({"preset": "cpu", "warmup_requests": 3}))
    assert mine.warmup_requests == 3 and not mine.test_request
