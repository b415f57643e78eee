"""Costs with numbers a person can check: hours × price, GiB × months × price, shared
bundles split, months cut at midnight UTC, and the cost per 1,000 messages."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from paddock import bundles, conversations, costs, crud
from paddock.config import reset_settings
from paddock.db import session_scope
from paddock.models import Artifact, ConversationMode, Deployment, utcnow

GIB = 1024**3
NOW = datetime(2026, 2, 1, 2, 0, tzinfo=UTC)
PRICES = costs.Prices(serving_usd_per_hour=2.0, storage_usd_per_gb_month=0.10)


def _ref(sid: str, created: datetime) -> bundles.Reference:
    return bundles.Reference(sid, "d1", "/store/models/d1/", 2 * GIB, created)


@pytest.fixture
def usage() -> costs.Usage:
    """alice's smol serves from Jan 31 22:00 on (4 h by now: 2 in January, 2 in February);
    bob's fork served 3 h on Jan 10. Both hold one 2 GiB bundle: smol for the last 730 h
    (a month), fork for the last 365 h of it."""
    return costs.Usage(
        now=NOW,
        submissions={"s1": ("alice", "smol"), "s2": ("bob", "fork")},
        deployments=[
            costs.Span("s1", datetime(2026, 1, 31, 22, tzinfo=UTC), None),
            costs.Span(
                "s2", datetime(2026, 1, 10, 0, tzinfo=UTC), datetime(2026, 1, 10, 3, tzinfo=UTC)
            ),
        ],
        references=[
            _ref("s1", NOW - timedelta(hours=730)),
            _ref("s2", NOW - timedelta(hours=365)),
        ],
        replies={("s1", "2026-01"): 1500, ("s1", "2026-02"): 500},
    )


def _rows(report: costs.CostReport) -> dict[str, costs.CostRow]:
    return {r.key: r for r in report.rows}


def test_costs_per_submission(usage: costs.Usage) -> None:
    rows = _rows(costs.report(usage, PRICES, by="submission"))

    smol, fork = rows["s1"], rows["s2"]
    assert (smol.name, smol.serving_hours, smol.serving_usd) == ("smol", 4.0, 8.0)
    # 2 GiB alone for half a month, then shared for the other half: 1 + 0.5 GB-months.
    assert smol.gb_months == pytest.approx(1.5)
    assert smol.storage_usd == pytest.approx(0.15)
    assert smol.total_usd == pytest.approx(8.15)
    assert smol.messages == 2000
    assert smol.usd_per_1k_messages == pytest.approx(8.15 / 2)
    assert (fork.serving_hours, fork.serving_usd) == (3.0, 6.0)
    assert fork.gb_months == pytest.approx(0.5) and fork.storage_usd == pytest.approx(0.05)
    assert fork.messages == 0 and fork.usd_per_1k_messages is None


def test_costs_per_developer_and_the_total(usage: costs.Usage) -> None:
    report = costs.report(usage, PRICES, by="developer")

    assert [r.key for r in report.rows] == ["alice", "bob"]  # the costliest first
    assert _rows(report)["alice"].total_usd == pytest.approx(8.15)
    assert _rows(report)["bob"].total_usd == pytest.approx(6.05)
    assert report.total.total_usd == pytest.approx(14.20)
    # The bundle is one copy: a month of 2 GiB, whoever holds it.
    assert report.total.gb_months == pytest.approx(2.0)
    assert report.total.usd_per_1k_messages == pytest.approx(14.20 / 2)


def test_costs_per_month_cut_at_midnight_utc(usage: costs.Usage) -> None:
    rows = _rows(costs.report(usage, PRICES, by="month"))

    assert list(rows) == ["2026-01", "2026-02"]
    january, february = rows["2026-01"], rows["2026-02"]
    assert (january.serving_hours, january.serving_usd) == (5.0, 10.0)  # 2 h smol + 3 h fork
    assert (february.serving_hours, february.serving_usd) == (2.0, 4.0)
    # Of the bundle's 730 hours, the last 2 fall in February.
    assert january.gb_months == pytest.approx(2 * 728 / 730)
    assert february.storage_usd == pytest.approx(2 * 2 / 730 * 0.10)
    assert (january.messages, february.messages) == (1500, 500)
    assert january.usd_per_1k_messages == pytest.approx(january.total_usd / 1.5)


# --------------------------------------------------------------------------- the command


@pytest.fixture
def database(tmp_path: Path) -> Iterator[None]:
    old = os.environ.get("PADDOCK_DATABASE_URL")
    os.environ["PADDOCK_DATABASE_URL"] = f"sqlite:///{tmp_path / 'costs.db'}"
    reset_settings()
    yield
    if old is None:
        os.environ.pop("PADDOCK_DATABASE_URL", None)
    else:
        os.environ["PADDOCK_DATABASE_URL"] = old
    reset_settings()


@pytest.fixture
def priced(prefect_harness: None, tmp_path: Path) -> Iterator[None]:
    """$1.50 an hour of serving, $0.05 a GB-month of storage; the blocks restored after."""
    from blocks import ModelStore, ServingTarget
    from blocks.defaults import SERVING, STORE, model_store, serving_target

    before = serving_target(), model_store()
    ServingTarget(backend="local", hourly_price_usd=1.5).save(SERVING, overwrite=True)
    ModelStore(url=str(tmp_path / "store"), storage_price_usd_per_gb_month=0.05).save(
        STORE, overwrite=True
    )
    yield
    before[0].save(SERVING, overwrite=True)
    before[1].save(STORE, overwrite=True)


@pytest.mark.usefixtures("database", "priced")
def test_paddock_costs_reads_the_tables_and_the_blocks_prices() -> None:
    from paddock.cli import app

    sub = crud.create_submission(developer="carol", source="org/m", display_name="m")
    now = utcnow()
    with session_scope() as session:
        # Served 2 h (3 h ago until 1 h ago); holds 1 GiB for a month (730 h) by now.
        session.add(
            Deployment(
                submission_id=sub.id,
                backend="local",
                created_at=now - timedelta(hours=3),
                stopped_at=now - timedelta(hours=1),
                active=False,
            )
        )
        session.add(
            Artifact(
                submission_id=sub.id,
                uri="/store/models/abc/model.tensors",
                size=GIB,
                sha256="0" * 64,
                created_at=now - timedelta(hours=730),
            )
        )
    conv = conversations.start_conversation(
        mode=ConversationMode.beta, user_id="u", submission_id=sub.id
    )
    for _ in range(4):
        conversations.add_reply(conversation_id=conv.id, submission_id=sub.id, content="hi")

    result = CliRunner().invoke(app, ["costs", "--by", "developer", "--json"])

    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["prices"] == {"serving_usd_per_hour": 1.5, "storage_usd_per_gb_month": 0.05}
    [carol] = body["rows"]
    assert carol["key"] == "carol" and carol["messages"] == 4
    assert carol["serving_usd"] == pytest.approx(3.0)
    assert carol["storage_usd"] == pytest.approx(0.05, rel=1e-4)
    assert carol["usd_per_1k_messages"] == pytest.approx(3.05 / 4 * 1000, rel=1e-4)
    assert body["total"]["total_usd"] == pytest.approx(3.05, rel=1e-4)

    table = CliRunner().invoke(app, ["costs", "--by", "developer"])
    assert table.exit_code == 0, table.output
    assert "carol" in table.stdout and "$3.05" in table.stdout and "$762.50" in table.stdout
