"""What serving and storing models costs: per submission, per developer, per month.

Serving is charged per deployment, from its start until it stopped (or now, while it
runs), at the serving target's hourly price. Storage is charged per bundle for as long
as a submission has held it, at the store's GB-month price, pro rata: a GB-month is
2^30 bytes kept for 730 hours (the cloud providers' month). A shared bundle is one copy,
so at each moment its cost is split evenly between the submissions holding it then.
Every charge is cut at UTC month boundaries, so the monthly view adds up to the others.

Prices are read from the blocks when the report is made; there is no price history, so
a changed price applies to the past as well. Costs per 1,000 chat messages divide a
row's cost by the replies its models wrote.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import String, func
from sqlalchemy.orm import Mapped
from sqlalchemy.sql import ColumnElement
from sqlmodel import col, select

from paddock import bundles
from paddock.db import get_engine, session_scope
from paddock.models import Deployment, Message, Submission, utcnow

__all__ = [
    "GIB",
    "MONTH_HOURS",
    "Prices",
    "Span",
    "Usage",
    "Charge",
    "CostRow",
    "CostReport",
    "By",
    "current_prices",
    "read_usage",
    "charges",
    "report",
]

GIB = 1024**3
MONTH_HOURS = 730.0
By = Literal["submission", "developer", "month"]


@dataclass(frozen=True)
class Prices:
    serving_usd_per_hour: float
    storage_usd_per_gb_month: float


@dataclass(frozen=True)
class Span:
    """One deployment's life."""

    submission_id: str
    start: datetime
    end: datetime | None  # None: still serving


@dataclass(frozen=True)
class Usage:
    now: datetime
    submissions: dict[str, tuple[str, str]]  # id → (developer, display name)
    deployments: list[Span]
    references: list[bundles.Reference]
    replies: dict[tuple[str, str], int]  # (submission id, "YYYY-MM") → replies written


@dataclass(frozen=True)
class Charge:
    submission_id: str
    month: str  # "YYYY-MM", UTC
    serving_hours: float = 0.0
    gb_months: float = 0.0
    serving_usd: float = 0.0
    storage_usd: float = 0.0


@dataclass(frozen=True)
class CostRow:
    key: str  # a submission id, a developer, or a month
    name: str  # the submission's display name ("" for the other views)
    serving_hours: float
    serving_usd: float
    gb_months: float
    storage_usd: float
    total_usd: float
    messages: int
    usd_per_1k_messages: float | None  # None: no messages to spread it over


@dataclass(frozen=True)
class CostReport:
    by: By
    prices: Prices
    rows: list[CostRow]
    total: CostRow

    def as_dict(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "prices": asdict(self.prices),
            "rows": [asdict(r) for r in self.rows],
            "total": asdict(self.total),
        }


def current_prices() -> Prices:
    """The prices in the serving-target and model-store blocks."""
    from blocks import model_store, serving_target  # configuration, loaded only here

    return Prices(
        serving_usd_per_hour=serving_target().hourly_price_usd,
        storage_usd_per_gb_month=model_store().storage_price_usd_per_gb_month,
    )


# --------------------------------------------------------------------------- reading


def _utc(moment: datetime) -> datetime:
    # Stored timestamps come back naive (SQLite, Postgres `timestamp`); they are UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _month_of(column: Mapped[datetime]) -> ColumnElement[str]:
    """The "YYYY-MM" of a timestamp column, in the database's own dialect."""
    if get_engine().dialect.name == "postgresql":
        return func.to_char(column, "YYYY-MM", type_=String)
    return func.strftime("%Y-%m", column, type_=String)


def read_usage(*, now: datetime | None = None) -> Usage:
    month = _month_of(col(Message.created_at))
    with session_scope() as session:
        subs = {
            sid: (developer, name)
            for sid, developer, name in session.exec(
                select(Submission.id, Submission.developer, Submission.display_name)
            ).all()
        }
        spans = [
            Span(d.submission_id, _utc(d.created_at), _utc(d.stopped_at) if d.stopped_at else None)
            for d in session.exec(select(Deployment).order_by(col(Deployment.id)))
        ]
        replies = {
            (sid, str(m)): int(n)
            for sid, m, n in session.execute(
                select(Message.submission_id, month, func.count())
                .where(col(Message.role) == "assistant", col(Message.submission_id).is_not(None))
                .group_by(col(Message.submission_id), month)
            ).all()
            if sid is not None
        }
    return Usage(
        now=now or utcnow(),
        submissions=subs,
        deployments=spans,
        references=bundles.references(),
        replies=replies,
    )


# --------------------------------------------------------------------------- charging


def _months(start: datetime, end: datetime) -> Iterator[tuple[str, float]]:
    """[start, end) cut at UTC month boundaries: ("YYYY-MM", hours) per piece."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    while start < end:
        nxt = datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)
        piece_end = min(nxt, end)
        yield f"{start:%Y-%m}", (piece_end - start).total_seconds() / 3600
        start = piece_end


def _serving(usage: Usage, prices: Prices) -> Iterator[Charge]:
    for span in usage.deployments:
        for month, hours in _months(span.start, span.end or usage.now):
            yield Charge(
                span.submission_id,
                month,
                serving_hours=hours,
                serving_usd=hours * prices.serving_usd_per_hour,
            )


def _storage(usage: Usage, prices: Prices) -> Iterator[Charge]:
    """Each bundle, from its first holder on, split between whoever holds it when."""
    by_digest: dict[str, list[bundles.Reference]] = {}
    for ref in usage.references:
        by_digest.setdefault(ref.digest, []).append(ref)
    for refs in by_digest.values():
        refs.sort(key=lambda r: r.created_at)
        gib = max(r.bytes for r in refs) / GIB
        edges = [r.created_at for r in refs] + [usage.now]
        for i in range(len(refs)):
            holders = refs[: i + 1]
            for month, hours in _months(edges[i], max(edges[i], edges[i + 1])):
                share = gib * hours / MONTH_HOURS / len(holders)
                for ref in holders:
                    yield Charge(
                        ref.submission_id,
                        month,
                        gb_months=share,
                        storage_usd=share * prices.storage_usd_per_gb_month,
                    )


def charges(usage: Usage, prices: Prices) -> list[Charge]:
    return [*_serving(usage, prices), *_storage(usage, prices)]


# --------------------------------------------------------------------------- reporting


def _key(by: By, usage: Usage, submission_id: str, month: str) -> str:
    if by == "submission":
        return submission_id
    if by == "developer":
        return usage.submissions.get(submission_id, ("?", ""))[0]
    return month


def _row(key: str, name: str, items: list[Charge], messages: int) -> CostRow:
    serving = sum(c.serving_usd for c in items)
    storage = sum(c.storage_usd for c in items)
    total = serving + storage
    return CostRow(
        key=key,
        name=name,
        serving_hours=sum(c.serving_hours for c in items),
        serving_usd=serving,
        gb_months=sum(c.gb_months for c in items),
        storage_usd=storage,
        total_usd=total,
        messages=messages,
        usd_per_1k_messages=total / messages * 1000 if messages else None,
    )


def report(usage: Usage, prices: Prices, *, by: By = "submission") -> CostReport:
    """The costs grouped `by` submission, developer or month; the costliest first (months
    in order)."""
    grouped: dict[str, list[Charge]] = {}
    for charge in charges(usage, prices):
        grouped.setdefault(_key(by, usage, charge.submission_id, charge.month), []).append(charge)
    messages: dict[str, int] = {}
    for (sid, month), n in usage.replies.items():
        key = _key(by, usage, sid, month)
        messages[key] = messages.get(key, 0) + n
    keys = set(grouped) | set(messages)
    rows = [
        _row(
            key,
            usage.submissions.get(key, ("", ""))[1] if by == "submission" else "",
            grouped.get(key, []),
            messages.get(key, 0),
        )
        for key in keys
    ]
    if by == "month":
        rows.sort(key=lambda r: r.key)
    else:
        rows.sort(key=lambda r: (-r.total_usd, r.key))
    everything = [c for items in grouped.values() for c in items]
    total = _row("total", "", everything, sum(messages.values()))
    return CostReport(by=by, prices=prices, rows=rows, total=total)
