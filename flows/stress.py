"""The stress stage: load a deployed model, measure it, hold it to its SLO.

Runs as the submission flow's subflow (which rolls the deployment back when this raises
`Rejected`) and on its own against any endpoint (``submission_id`` None → "adhoc"). The
work lives in `paddock.stress`; this module only orders it:

    measure (validate → test request → warm-up → steps → metrics → verdict)
    → record (StressRun row) → publish (table + markdown artifacts) → gate.

An invalid profile or SLO raises `ProfileError` before any request; an endpoint that does
not answer the test request raises `EndpointDown` (a `TransientError`, retried); a model
that misses its SLO raises `Rejected` — after the figures are stored and shown.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from paddock import crud
from paddock.errors import EndpointDown, Rejected
from paddock.stress.metrics import StressMetrics
from paddock.stress.profiles import load_profile
from paddock.stress.report import table_rows, to_markdown
from paddock.stress.runner import run_stress
from paddock.stress.slo import Slo, slo_for

__all__ = ["stress"]


def _retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only an endpoint that was down; a finished measurement is never redone."""
    try:
        state.result()
    except EndpointDown:
        return True
    except Exception:
        return False
    return False


@task(
    name="measure-load", retries=2, retry_delay_seconds=[5, 15], retry_condition_fn=_retry_transient
)
def measure_load(
    endpoint: str, model: str, profile: dict[str, Any], slo: dict[str, Any]
) -> dict[str, Any]:
    """Run the profile and return the stored form of the figures and verdict."""
    outcome = run_stress(endpoint, model, profile, Slo(**slo))
    return outcome.to_json(endpoint=endpoint, model=model)


@task(name="record-stress-run")
def record_stress_run(
    submission_id: str | None, endpoint: str, profile: dict[str, Any], result: dict[str, Any]
) -> int | None:
    run = crud.add_stress_run(
        submission_id=submission_id,
        endpoint=endpoint,
        profile=profile,
        metrics=result,
        passed=result["passed"],
        failures=result["failures"],
    )
    return run.id


@task(name="publish-stress-report")
def publish_stress_report(
    key: str, endpoint: str, model: str, profile: dict[str, Any], result: dict[str, Any]
) -> None:
    steps = [StressMetrics.from_dict(s) for s in result["steps"]]
    slo = Slo(**result["slo"]) if result.get("slo") else None
    verdict = "passed" if result["passed"] else "FAILED: " + "; ".join(result["failures"])
    create_table_artifact(
        key=key, table=table_rows(steps), description=f"{model} at {endpoint}: {verdict}"
    )
    create_markdown_artifact(
        key=f"{key}-report",
        markdown=to_markdown(
            steps,
            endpoint=endpoint,
            model=model,
            profile=profile,
            slo=slo,
            failures=result["failures"],
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
) -> dict[str, Any]:
    """Stress-test ``model`` at ``endpoint``; return the figures, raise `Rejected` on a miss."""
    logger = get_run_logger()
    # Both validated here, before the first request (ProfileError says what is wrong).
    prof = load_profile(profile).model_dump()
    slo = slo_for(slo_profile, slo_overrides).model_dump()
    result = measure_load(endpoint, model, prof, slo)
    result["stress_run_id"] = record_stress_run(submission_id, endpoint, prof, result)
    key = f"stress-{(submission_id or 'adhoc').lower()}"
    publish_stress_report(key, endpoint, model, prof, result)
    if not result["passed"]:
        raise Rejected(
            f"{model} missed its {slo_profile} SLO under load: " + "; ".join(result["failures"])
        )
    logger.info(
        "stress passed: TTFT p50 %.0f ms, TPOT p50 %.1f ms, %.1f req/s at concurrency %s",
        result["median_ttft_ms"],
        result["median_tpot_ms"],
        result["request_throughput"],
        result["concurrency"],
    )
    return result


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
