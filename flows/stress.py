"""The stress test: load a deployed model, measure it, hold it to its SLO.

A flow of its own, so it runs both as the submission flow's stress stage (`stress_test`,
called from that flow's body as a subflow) and alone against any endpoint
(``submission_id`` None → "adhoc"). The work lives in `paddock.stress`; this module
only orders it:

    choose prompts → measure (validate → test request → warm-up → steps → metrics → verdict)
    → record (StressRun row) → publish (table + markdown artifacts) → gate.

The prompts are real ones when there are enough: what users who agreed to share their
conversations sent (this model's users first, then any model's), since that is the load
the model will carry; otherwise the shipped synthetic set. The StressRun records which
(``prompt_source`` in its metrics), so two runs' figures are compared knowingly.

An invalid profile or SLO raises `ProfileError` before any request; an endpoint that does
not answer the test request raises `EndpointDown` (transient: `measure-load` is retried
under the one retry policy); a model that misses its SLO raises `SloMissed` — after the
figures are stored and shown.
"""

from __future__ import annotations

from paddock.config import settings_or_exit

if __name__ == "__main__":
    settings_or_exit()  # a bad setting: one sentence, before imports read the settings

from collections.abc import Sequence
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from blocks import serving_target
from paddock import conversations, crud
from paddock.contracts import Endpoint, StressSummary
from paddock.errors import SloMissed, TransientError
from paddock.prompting import Turn, build_request, counter_for
from paddock.retry import retried_task, stage_policy
from paddock.serving import dead_server_log
from paddock.stress.loadgen import Shaper
from paddock.stress.profiles import LoadProfile, load_profile
from paddock.stress.prompts import Conversation, from_database
from paddock.stress.report import headline, table_rows, to_markdown
from paddock.stress.runner import StressOutcome, run_stress
from paddock.stress.slo import Slo, slo_for
from tasks.stage import subflow_stage

__all__ = ["PromptSource", "stress", "stress_test", "choose_prompts", "after_warmup"]

# Where a run's prompts came from: shared conversations of the model under test, of any
# model, or the shipped synthetic set.
PromptSource = Literal["conversations:own", "conversations:all", "shipped"]


@task(name="choose-prompts", cache_policy=NO_CACHE)
def choose_prompts(
    profile: LoadProfile, submission_id: str | None
) -> tuple[list[Conversation] | None, PromptSource]:
    """Real prompts when there are as many as a measured run sends (fewer would repeat
    the same few requests, and a repeated prompt is served from vLLM's prefix cache,
    flattering the figures); None, to send the shipped set, otherwise."""
    need = profile.num_requests
    scopes: list[tuple[PromptSource, str | None]] = [("conversations:all", None)]
    if submission_id is not None:
        scopes.insert(0, ("conversations:own", submission_id))
    for source, scope in scopes:
        rows = conversations.consented_prompts(limit=need, seed=profile.seed, submission_id=scope)
        prompts = from_database(rows)
        if len(prompts) >= need:
            return prompts, source
    return None, "shipped"


@retried_task("measure-load", stage_policy(2))
def measure_load(
    endpoint: str,
    model: str,
    profile: LoadProfile,
    slo: Slo,
    submission_id: str | None,
    prompts: Sequence[Conversation] | None = None,
) -> StressOutcome:
    """Run the profile and compute the figures and the verdict (``prompts`` None: the
    shipped set)."""
    shape = _submission_shape(submission_id, model) if submission_id else None
    return run_stress(endpoint, model, profile, slo, prompts=prompts, shape=shape)


def _submission_shape(submission_id: str, model: str) -> Shaper:
    """Each stress prompt as the submission's users will send it: its prompt format (its
    formatter, else its chat template), generation parameters and input limit."""
    sub = crud.require_submission(submission_id=submission_id)
    counter = counter_for(submission_id)

    def shape(conversation: Conversation) -> tuple[str, dict[str, Any]]:
        request = build_request(
            submission=sub, model_name=model, turns=_turns(conversation), counter=counter
        )
        return request.path, request.body

    return shape


def _turns(conversation: Conversation) -> list[Turn]:
    turns = []
    for message in conversation:
        role, content = message["role"], message["content"]
        if role == "system":
            turns.append(Turn("system", content))
        elif role == "assistant":
            turns.append(Turn("assistant", content))
        else:
            turns.append(Turn("user", content))
    return turns


@task(name="record-stress-run", cache_policy=NO_CACHE)
def record_stress_run(
    submission_id: str | None,
    endpoint: str,
    model: str,
    outcome: StressOutcome,
    prompt_source: PromptSource = "shipped",
) -> int:
    run = crud.add_stress_run(
        submission_id=submission_id,
        endpoint=endpoint,
        profile=outcome.profile.model_dump(),
        metrics=outcome.to_json(endpoint=endpoint, model=model, prompt_source=prompt_source),
        passed=outcome.passed,
        failures=outcome.failures,
    )
    if run.id is None:  # pragma: no cover - the database assigns it on insert
        raise AssertionError("stress run row has no id")
    return run.id


@task(name="publish-stress-report", cache_policy=NO_CACHE)
def publish_stress_report(key: str, endpoint: str, model: str, outcome: StressOutcome) -> None:
    verdict = "passed" if outcome.passed else "FAILED: " + "; ".join(outcome.failures)
    create_table_artifact(
        key=key, table=table_rows(outcome.steps), description=f"{model} at {endpoint}: {verdict}"
    )
    create_markdown_artifact(
        key=f"{key}-report",
        markdown=to_markdown(
            outcome.steps,
            endpoint=endpoint,
            model=model,
            profile=outcome.profile.model_dump(),
            slo=outcome.slo,
            failures=outcome.failures,
        ),
        description=f"stress test of {model}",
    )


@flow(name="stress", log_prints=True)
def stress(
    endpoint: str,
    model: str,
    profile: str | dict[str, Any] = "cpu",
    slo_profile: str = "cpu",
    slo_overrides: dict[str, Any] | None = None,
    submission_id: str | None = None,
) -> StressSummary:
    """Stress-test ``model`` at ``endpoint``; raise `SloMissed` when it misses its SLO.

    With a ``submission_id`` every request is shaped as that submission's users are
    served (prompt format, generation parameters), so the figures are theirs.
    """
    # Both validated here, before the first request (ProfileError says what is wrong).
    prof = load_profile(profile)
    slo = slo_for(slo_profile, slo_overrides)
    prompts, source = choose_prompts(prof, submission_id)
    get_run_logger().info(
        "stress prompts: %s",
        "the shipped set" if prompts is None else f"{len(prompts)} from {source}",
    )
    outcome = measure_load(endpoint, model, prof, slo, submission_id, prompts)
    run_id = record_stress_run(submission_id, endpoint, model, outcome, source)
    publish_stress_report(f"stress-{(submission_id or 'adhoc').lower()}", endpoint, model, outcome)
    if not outcome.passed:
        raise SloMissed(
            f"{model} missed its {slo_profile} SLO under load: " + "; ".join(outcome.failures)
        )
    head = headline(outcome.steps, outcome.slo)
    if head is None:  # pragma: no cover - a passed run measured at least one step
        raise AssertionError("a passed stress run has no steps")
    get_run_logger().info(
        "stress passed: TTFT p50 %.0f ms, TPOT p50 %.1f ms, %.1f req/s at concurrency %s",
        head.median_ttft_ms,
        head.median_tpot_ms,
        head.request_throughput,
        head.concurrency,
    )
    return StressSummary(
        passed=True,
        stress_run_id=run_id,
        completed=head.completed,
        median_ttft_ms=head.median_ttft_ms,
        median_tpot_ms=head.median_tpot_ms,
        request_throughput=head.request_throughput,
    )


def after_warmup(profile: str | dict[str, Any]) -> dict[str, Any]:
    """The profile as the stress stage runs it: right after the warm-up stage, which has
    just had the endpoint answer (the test request's job) and sent it requests shaped as
    users' (the warm-up's), so neither is sent again unless the profile asks for them.
    What is measured, and how it is judged, is the profile's own."""
    given = {"preset": profile} if isinstance(profile, str) else dict(profile)
    return {"test_request": False, "warmup_requests": 0, **given}


@subflow_stage("stress")
def stress_test(submission_id: str, endpoint: Endpoint) -> StressSummary:
    """The submission's stress stage: the serving target's profile and SLO. A server that
    died under the load did not miss its SLO: that is the platform's fault (transient),
    told with the server's own last log lines, not the developer's."""
    target = serving_target()
    try:
        return stress(
            endpoint=endpoint.url,
            model=endpoint.model,
            profile=after_warmup(target.stress_profile),
            slo_profile=target.slo_profile,
            slo_overrides=target.slo_overrides or None,
            submission_id=submission_id,
        )
    except SloMissed as exc:
        tail = dead_server_log(submission_id)
        if tail is None:
            raise
        raise TransientError(
            f"the model server died during the stress test; its log ends:\n{tail}"
        ) from exc


if __name__ == "__main__":  # `python -m flows.stress ENDPOINT MODEL [PROFILE] [SUBMISSION]`
    import sys

    args = sys.argv[1:]
    if len(args) < 2:
        raise SystemExit("usage: python -m flows.stress ENDPOINT MODEL [PROFILE] [SUBMISSION_ID]")
    stress(
        endpoint=args[0],
        model=args[1],
        profile=args[2] if len(args) > 2 else "cpu",
        submission_id=args[3] if len(args) > 3 else None,
    )
