"""A submission's story so far: per-stage timings, attempts and the SLA, for people and JSON.

The CLI's `status --json` prints exactly `StatusReport.as_dict()`; the API will return the
same shape.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC
from typing import Any

from paddock import crud, lifecycle, sla
from paddock.config import get_settings
from paddock.models import StageRun, StageStatus, utcnow

__all__ = ["StageSummary", "StatusReport", "build", "SLA_SECONDS"]

SLA_SECONDS = 300


@dataclass
class StageSummary:
    name: str
    status: str
    seconds: float | None
    attempts: int
    detail: str | None = None


@dataclass
class StatusReport:
    id: str
    name: str
    source: str
    revision: str | None
    status: str
    reason: str | None
    failed_stage: str | None
    endpoint: str | None
    stages: list[StageSummary] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    stress: dict[str, Any] | None = None
    total_seconds: float = 0.0
    sla_seconds: int = SLA_SECONDS
    # The SLA clock (`paddock.sla.SlaView.as_dict()`): time left, or how late and where
    # the time went; None for a submission accepted before clocks were kept.
    sla: dict[str, Any] | None = None

    @property
    def within_sla(self) -> bool:
        return self.total_seconds <= self.sla_seconds

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["within_sla"] = self.within_sla
        return out


def _summarize(name: str, runs: list[StageRun]) -> StageSummary:
    attempts = [r for r in runs if r.status is not StageStatus.skipped]
    last = runs[-1]
    seconds = sum((r.seconds or 0.0) for r in attempts) if attempts else 0.0
    if last.status is StageStatus.running:
        # Stored timestamps come back naive (SQLite, Postgres `timestamp`); they are UTC.
        started = last.started_at.replace(tzinfo=UTC)
        seconds += (utcnow() - started).total_seconds()
    error = last.detail.get("error") if last.detail else None
    return StageSummary(
        name=name,
        status=str(last.status),
        seconds=round(seconds, 3),
        attempts=len(attempts),
        detail=error,
    )


def _headline(stress: Any) -> dict[str, Any] | None:
    if stress is None:
        return None
    keys = (
        "median_ttft_ms",
        "median_tpot_ms",
        "p99_e2el_ms",
        "output_throughput",
        "median_words_per_minute",
        "error_rate",
    )
    return {
        "passed": stress.passed,
        "failures": stress.failures,
        **{k: stress.metrics.get(k) for k in keys if k in stress.metrics},
    }


def build(submission_id: str) -> StatusReport:
    sub = crud.require_submission(submission_id=submission_id)
    runs = crud.stage_runs(submission_id=submission_id)
    by_stage: dict[str, list[StageRun]] = {}
    for run in runs:
        by_stage.setdefault(run.stage, []).append(run)
    # In pipeline order, not the order rows were written: a stage run beside others (the
    # runtime checks) may write its first row a moment after the stage that follows it.
    order = {stage.name: i for i, stage in enumerate(lifecycle.STAGES)}
    named = sorted(by_stage.items(), key=lambda item: order.get(item[0], len(order)))
    stages = [_summarize(name, stage_runs) for name, stage_runs in named]
    if runs:
        first = min(r.started_at for r in runs)
        ends = [r.ended_at for r in runs if r.ended_at]
        last = max(ends) if ends else first
        total = (last - first).total_seconds()
    else:
        total = 0.0
    clock = sla.view(submission_id)
    return StatusReport(
        id=sub.id,
        name=sub.display_name,
        source=sub.source,
        revision=sub.resolved_revision,
        status=str(sub.status),
        reason=sub.reason,
        failed_stage=sub.failed_stage,
        endpoint=sub.endpoint,
        stages=stages,
        artifacts=[
            {"uri": a.uri, "size": a.size, "sha256": a.sha256}
            for a in crud.list_artifacts(submission_id=submission_id)
        ],
        stress=_headline(crud.latest_stress_run(submission_id=submission_id)),
        total_seconds=round(total, 3),
        sla_seconds=clock.seconds if clock else get_settings().sla_seconds,
        sla=clock.as_dict() if clock else None,
    )
