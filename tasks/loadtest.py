"""Stage 7: stress-test the live endpoint against the serving target's SLOs."""

from __future__ import annotations

from typing import Any

from blocks import serving_target
from tasks.stage import stage

__all__ = ["loadtest"]


@stage("stress", retries=0)
def loadtest(submission_id: str, deployed: dict[str, Any]) -> dict[str, Any]:
    from flows.stress import stress  # a subflow: its own run, artifacts and logs in the UI

    target = serving_target()
    return stress(
        endpoint=deployed["endpoint"],
        model=deployed["model"],
        profile=target.stress_profile,
        slo_profile=target.slo_profile,
        slo_overrides=target.slo_overrides or None,
        submission_id=submission_id,
    )
