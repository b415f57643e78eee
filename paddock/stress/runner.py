"""Run a stress test start to finish, without Prefect: validate, load, measure, judge.

The flow, the bench and the CLI call this one function, so they all validate the same way
(profile and SLO before any request), compute the same figures and reach the same verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from paddock.stress.loadgen import Shaper, StepRun, run_load_sync
from paddock.stress.metrics import StressMetrics, calculate_metrics
from paddock.stress.profiles import LoadProfile, load_profile
from paddock.stress.prompts import Conversation
from paddock.stress.report import to_json
from paddock.stress.sequential import gate_for
from paddock.stress.slo import Slo, evaluate, slo_for

__all__ = ["StressOutcome", "run_stress"]


@dataclass(slots=True)
class StressOutcome:
    profile: LoadProfile
    slo: Slo
    steps: list[StressMetrics]
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self, **meta: Any) -> dict[str, Any]:
        return to_json(self.steps, slo=self.slo, failures=self.failures, **meta)


def run_stress(
    endpoint: str,
    model: str,
    profile: str | dict[str, Any] | LoadProfile = "cpu",
    slo: str | Slo = "cpu",
    slo_overrides: dict[str, Any] | None = None,
    *,
    prompts: Sequence[Conversation] | None = None,
    api_key: str | None = None,
    shape: Shaper | None = None,
) -> StressOutcome:
    """Validate, run the profile, compute each step's metrics and evaluate the SLO.

    Raises `ProfileError` (bad profile/SLO, nothing sent) or `EndpointDown` (the test
    request failed, nothing measured); an SLO miss is *not* an exception here — it is in
    ``failures`` for the caller to act on.
    """
    prof = load_profile(profile)
    gate = slo if isinstance(slo, Slo) else slo_for(slo, slo_overrides)
    rules = gate_for(gate, prof)

    def measured(run: StepRun) -> StressMetrics:
        m = calculate_metrics(
            run.results,
            run.duration_s,
            gate,
            concurrency=run.concurrency,
            request_rate=run.request_rate,
        )
        if rules is not None and rules(run.concurrency) is not None:
            m.settled = run.verdict or "cap"
            m.requests_to_verdict = run.requests_at_verdict or m.total_requests
        return m

    def keep_going(run: StepRun) -> bool:
        # A settled failure ends the sweep: the gate has failed whatever comes after.
        return run.verdict != "fail" or not evaluate(measured(run), gate)

    runs = run_load_sync(
        endpoint,
        model,
        prof,
        prompts,
        api_key=api_key,
        shape=shape,
        stop_rule=rules,
        keep_going=keep_going if rules is not None else None,
    )
    steps = [measured(r) for r in runs]
    return StressOutcome(prof, gate, steps, evaluate(steps, gate))
