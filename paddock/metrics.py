"""Prometheus metrics, read from the database at scrape time.

Every figure is computed from the tables when Prometheus scrapes, none is counted in a
process. The pipeline runs in flow processes that end (a child process, a Prefect
worker), so a counter or histogram observed there would die with it or need a push
gateway; the tables already hold every stage's start and end, every reply's TTFT and
every rating. Read at scrape time, the figures are the same from any API replica,
survive restarts, and include what happened while the API was down. The counts only
grow (rows are added, not deleted), so Prometheus's `rate()` and `histogram_quantile()`
work on them as on in-process counters.

The price is one scan of those tables per scrape; the message histograms are bucketed
in SQL, so the API never loads the messages themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import ColumnElement, case, func
from sqlalchemy.orm import Mapped
from sqlmodel import Session, col, select

from paddock.db import session_scope
from paddock.models import (
    Deployment,
    Feedback,
    Message,
    StageRun,
    StageStatus,
    Status,
    Submission,
)

__all__ = ["PaddockCollector", "registry", "METRICS"]

STAGE_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
DEPLOYED_BUCKETS = (30, 60, 120, 180, 240, 300, 450, 600, 900, 1800, 3600)  # SLA: 300 s
TTFT_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10)
LATENCY_BUCKETS = (0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)

# Name → help text, the names dashboards and alerts may use (`_total` is added to
# counters and `_bucket`/`_sum`/`_count` to histograms in the exposition).
METRICS: dict[str, str] = {
    "paddock_submissions": "Submissions by current status.",
    "paddock_deployments_active": "Deployments serving now, by backend.",
    "paddock_stage_duration_seconds": "Pipeline stage attempts by stage and outcome.",
    "paddock_time_to_deployed_seconds": "From submission to first publication.",
    "paddock_chat_ttft_seconds": "Time to a reply's first token, per model.",
    "paddock_chat_latency_seconds": "Time to a reply's last token, per model.",
    "paddock_chat_replies": "Model replies written, per model (failed ones included).",
    "paddock_feedback": "Ratings by users, per model and thumb.",
    "paddock_relay_errors": "Replies the relay could not get from the model, per model.",
}


def _seconds(start: datetime, end: datetime) -> float:
    return max((end - start).total_seconds(), 0.0)


def _histogram(name: str, labels: Sequence[str]) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, METRICS[name], labels=list(labels))


def _le(bound: float) -> str:
    return str(float(bound))


def _add(
    family: HistogramMetricFamily,
    labels: Sequence[str],
    bounds: Sequence[float],
    values: Iterable[float],
) -> None:
    """One labelled histogram from raw values (cumulative buckets, +Inf, sum)."""
    seen = sorted(values)
    buckets = [(_le(b), float(sum(1 for v in seen if v <= b))) for b in bounds]
    family.add_metric(list(labels), [*buckets, ("+Inf", float(len(seen)))], sum(seen))


class PaddockCollector(Collector):
    """Every paddock metric, from one short database session per scrape."""

    def describe(self) -> Iterable[Metric]:
        return []  # the names are fixed (METRICS); registering must not query the database

    def collect(self) -> Iterator[Metric]:
        with session_scope() as session:
            yield self._submissions(session)
            yield self._deployments(session)
            yield self._stages(session)
            yield self._time_to_deployed(session)
            names = dict(session.exec(select(Submission.id, Submission.display_name)).all())
            yield from self._chat(session, names)
            yield self._feedback(session, names)

    def _submissions(self, session: Session) -> Metric:
        counts = dict(
            session.exec(
                select(Submission.status, func.count()).group_by(col(Submission.status))
            ).all()
        )
        gauge = GaugeMetricFamily(
            "paddock_submissions", METRICS["paddock_submissions"], labels=["status"]
        )
        for status in Status:  # every status, zero included, so a panel never goes blank
            gauge.add_metric([str(status)], float(counts.get(status, 0)))
        return gauge

    def _deployments(self, session: Session) -> Metric:
        rows = session.exec(
            select(Deployment.backend, func.count())
            .where(col(Deployment.active).is_(True))
            .group_by(col(Deployment.backend))
        ).all()
        gauge = GaugeMetricFamily(
            "paddock_deployments_active", METRICS["paddock_deployments_active"], labels=["backend"]
        )
        for backend in sorted({"local", "kubernetes", *(b for b, _ in rows)}):
            gauge.add_metric([backend], float(dict(rows).get(backend, 0)))
        return gauge

    def _stages(self, session: Session) -> Metric:
        rows = session.exec(
            select(StageRun.stage, StageRun.status, StageRun.started_at, StageRun.ended_at)
            .where(col(StageRun.ended_at).is_not(None))
            .where(col(StageRun.status) != StageStatus.skipped)
        ).all()
        durations: dict[tuple[str, str], list[float]] = {}
        for stage, status, started, ended in rows:
            if ended is not None:
                key = (stage, str(status))
                durations.setdefault(key, []).append(_seconds(started, ended))
        family = _histogram("paddock_stage_duration_seconds", ["stage", "outcome"])
        for (stage, outcome), values in sorted(durations.items()):
            _add(family, [stage, outcome], STAGE_BUCKETS, values)
        return family

    def _time_to_deployed(self, session: Session) -> Metric:
        first_publish = func.min(StageRun.ended_at)
        rows = session.exec(
            select(Submission.created_at, first_publish)
            .join(StageRun, col(StageRun.submission_id) == col(Submission.id))
            .where(col(StageRun.stage) == "publish")
            .where(col(StageRun.status) == StageStatus.succeeded)
            .group_by(col(Submission.id), col(Submission.created_at))
        ).all()
        family = _histogram("paddock_time_to_deployed_seconds", [])
        _add(family, [], DEPLOYED_BUCKETS, (_seconds(c, p) for c, p in rows if p is not None))
        return family

    def _chat(self, session: Session, names: dict[str, str]) -> Iterator[Metric]:
        replies = CounterMetricFamily(
            "paddock_chat_replies", METRICS["paddock_chat_replies"], labels=["submission", "model"]
        )
        errors = CounterMetricFamily(
            "paddock_relay_errors", METRICS["paddock_relay_errors"], labels=["submission", "model"]
        )
        assistant = (col(Message.role) == "assistant", col(Message.submission_id).is_not(None))
        for sid, total, failed in session.exec(
            select(
                Message.submission_id,
                func.count(),
                func.sum(case((col(Message.error).is_not(None), 1), else_=0)),
            )
            .where(*assistant)
            .group_by(col(Message.submission_id))
        ).all():
            if sid is not None:
                replies.add_metric([sid, names.get(sid, "")], float(total))
                errors.add_metric([sid, names.get(sid, "")], float(failed or 0))
        yield replies
        yield errors
        for name, column, bounds in (
            ("paddock_chat_ttft_seconds", col(Message.ttft_ms), TTFT_BUCKETS),
            ("paddock_chat_latency_seconds", col(Message.latency_ms), LATENCY_BUCKETS),
        ):
            yield self._sql_histogram(session, name, column, bounds, assistant, names)

    def _sql_histogram(
        self,
        session: Session,
        name: str,
        millis: Mapped[float | None],
        bounds: Sequence[float],
        where: Sequence[ColumnElement[bool]],
        names: dict[str, str],
    ) -> Metric:
        """A per-model histogram of a milliseconds column, bucketed by the database."""
        per_bucket = [func.sum(case((millis <= b * 1000.0, 1), else_=0)) for b in bounds]
        query = (
            select(Message.submission_id, func.count(), func.sum(millis), *per_bucket)
            .where(*where, millis.is_not(None))
            .group_by(col(Message.submission_id))
        )
        family, les = _histogram(name, ["submission", "model"]), [_le(b) for b in bounds]
        for sid, count, total, *cumulative in session.execute(query).all():
            buckets = [(le, float(n or 0)) for le, n in zip(les, cumulative, strict=True)]
            family.add_metric(
                [sid, names.get(sid, "")],
                [*buckets, ("+Inf", float(count))],
                float(total or 0) / 1000.0,
            )
        return family

    def _feedback(self, session: Session, names: dict[str, str]) -> Metric:
        counter = CounterMetricFamily(
            "paddock_feedback",
            METRICS["paddock_feedback"],
            labels=["submission", "model", "rating"],
        )
        for sid, up, count in session.exec(
            select(Feedback.submission_id, Feedback.thumbs_up, func.count()).group_by(
                col(Feedback.submission_id), col(Feedback.thumbs_up)
            )
        ).all():
            counter.add_metric([sid, names.get(sid, ""), "up" if up else "down"], float(count))
        return counter


def registry() -> CollectorRegistry:
    """A registry holding only paddock's collector (not the process-global default one,
    so creating several apps, as tests do, never registers a name twice)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(PaddockCollector())
    return reg
