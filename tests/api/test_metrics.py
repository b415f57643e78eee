"""`GET /metrics` on the real API: figures read from the tables, and a Grafana dashboard
that only asks for metrics the endpoint exposes."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from paddock import conversations, crud, verdicts
from paddock.db import session_scope
from paddock.models import ConversationMode, StageRun, StageStatus, Submission, utcnow
from tests.api.conftest import Api

DASHBOARD = Path(__file__).resolve().parents[2] / "ops" / "grafana" / "paddock.json"


@dataclass(frozen=True)
class Seeded:
    submission_id: str
    text: str  # the exposition after seeding


def _stage(submission_id: str, stage: str, start_s: float, seconds: float) -> None:
    """A succeeded stage run that started `start_s` seconds after the submission."""
    sub = crud.require_submission(submission_id=submission_id)
    with session_scope() as session:
        started = sub.created_at + timedelta(seconds=start_s)
        session.add(
            StageRun(
                submission_id=submission_id,
                stage=stage,
                attempt=1,
                status=StageStatus.succeeded,
                started_at=started,
                ended_at=started + timedelta(seconds=seconds),
            )
        )


def _conversation(submission_id: str, replies: list[dict[str, Any]], thumbs_up: bool) -> None:
    conv = conversations.start_conversation(
        mode=ConversationMode.beta, user_id="metrics-user", submission_id=submission_id
    )
    for reply in replies:
        conversations.add_user_message(conversation_id=conv.id, content="hello")
        conversations.add_reply(
            conversation_id=conv.id, submission_id=submission_id, content="hi", **reply
        )
    verdicts.end_with_feedback(conversation_id=conv.id, thumbs_up=thumbs_up, text=None)


@pytest.fixture(scope="module")
def seeded(api: Api) -> Seeded:
    sub = crud.create_submission(developer="metrics", source="org/m", display_name="metered")
    with session_scope() as session:
        row = session.get(Submission, sub.id)
        assert row is not None
        row.created_at = utcnow() - timedelta(hours=1)
        session.add(row)
    _stage(sub.id, "download", 1, 2)
    _stage(sub.id, "publish", 99, 1)  # published 100 s after it was submitted
    crud.record_deployment(
        submission_id=sub.id, backend="local", endpoint="http://127.0.0.1:9", handle={}
    )
    _conversation(sub.id, [{"ttft_ms": 100.0, "latency_ms": 1000.0}], thumbs_up=True)
    _conversation(
        sub.id,
        [{"ttft_ms": 300.0, "latency_ms": 3000.0}, {"error": "the model did not answer"}],
        thumbs_up=False,
    )
    with api.client() as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return Seeded(sub.id, response.text)


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(seeded: Seeded, name: str, **labels: str) -> float:
    return _samples(seeded.text)[(name, frozenset(labels.items()))]


def test_chat_figures_per_model(seeded: Seeded) -> None:
    sid = {"submission": seeded.submission_id, "model": "metered"}

    assert _value(seeded, "paddock_chat_replies_total", **sid) == 3
    assert _value(seeded, "paddock_relay_errors_total", **sid) == 1
    assert _value(seeded, "paddock_chat_ttft_seconds_count", **sid) == 2
    assert _value(seeded, "paddock_chat_ttft_seconds_sum", **sid) == pytest.approx(0.4)
    assert _value(seeded, "paddock_chat_ttft_seconds_bucket", **sid, le="0.1") == 1
    assert _value(seeded, "paddock_chat_ttft_seconds_bucket", **sid, le="0.3") == 2
    assert _value(seeded, "paddock_chat_ttft_seconds_bucket", **sid, le="+Inf") == 2
    assert _value(seeded, "paddock_chat_latency_seconds_sum", **sid) == pytest.approx(4.0)
    assert _value(seeded, "paddock_chat_latency_seconds_bucket", **sid, le="2.0") == 1
    assert _value(seeded, "paddock_feedback_total", **sid, rating="up") == 1
    assert _value(seeded, "paddock_feedback_total", **sid, rating="down") == 1


def test_pipeline_figures(seeded: Seeded) -> None:
    samples = _samples(seeded.text)
    statuses = {dict(k[1])["status"] for k in samples if k[0] == "paddock_submissions"}

    assert statuses >= {"submitted", "deployed", "failed", "archived"}
    assert _value(seeded, "paddock_submissions", status="submitted") >= 1
    assert _value(seeded, "paddock_deployments_active", backend="local") >= 1
    download = {"stage": "download", "outcome": "succeeded"}
    assert _value(seeded, "paddock_stage_duration_seconds_count", **download) >= 1
    assert _value(seeded, "paddock_stage_duration_seconds_bucket", **download, le="2.0") >= 1
    # 100 s from submission to publication: inside the 120 s bucket, outside the 60 s one.
    within = _value(seeded, "paddock_time_to_deployed_seconds_bucket", le="120.0")
    assert within - _value(seeded, "paddock_time_to_deployed_seconds_bucket", le="60.0") >= 1


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    def panels(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [p for item in items for p in (item, *panels(item.get("panels", [])))]

    found = [t["expr"] for p in panels(dashboard["panels"]) for t in p.get("targets", [])]
    variables = dashboard["templating"]["list"]
    return found + [v["query"]["query"] for v in variables if v["type"] == "query"]


def test_the_grafana_dashboard_asks_only_for_exposed_metrics(seeded: Seeded) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exposed = {name for name, _ in _samples(seeded.text)}

    assert dashboard["schemaVersion"] >= 39
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    graphs = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert graphs and all(p["type"] and p["targets"] for p in graphs)
    assert all(p["datasource"]["uid"] == "${datasource}" for p in graphs)
    for expr in _exprs(dashboard):
        names = set(re.findall(r"\bpaddock_[a-z0-9_]+", expr))
        assert names, f"{expr!r} names no paddock metric"
        assert names <= exposed, f"{expr!r} asks for {sorted(names - exposed)}"
