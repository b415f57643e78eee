"""`paddock feedback`, `paddock leaderboard` and `paddock route`, on the database and
through the API: the same JSON either way."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from paddock import conversations as conv
from paddock import verdicts
from paddock.cli import app
from paddock.config import reset_settings
from paddock.db import session_scope
from paddock.models import ConversationMode, LeaderboardSnapshot
from tests.chat.conftest import Api, Deploy, Dev, make_dev
from tests.chat.fakes import ChatFakeServer

runner = CliRunner()


def rated(submission_id: str, up: bool, text: str | None = None) -> None:
    c = conv.start_conversation(
        mode=ConversationMode.beta, user_id="u", submission_id=submission_id
    )
    verdicts.end_with_feedback(conversation_id=c.id, thumbs_up=up, text=text)


@pytest.fixture
def via_api(api: Api, monkeypatch: pytest.MonkeyPatch) -> Iterator[Dev]:
    dev = make_dev("alice")
    monkeypatch.setenv("PADDOCK_API_URL", api.url)
    monkeypatch.setenv("PADDOCK_API_KEY", dev.key)
    reset_settings()
    yield dev
    monkeypatch.delenv("PADDOCK_API_URL")
    monkeypatch.delenv("PADDOCK_API_KEY")
    reset_settings()


def run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def test_feedback_prints_the_same_json_from_the_database_and_the_api(
    api: Api, deploy: Deploy, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = deploy("http://127.0.0.1:9", name="smol", developer="alice")
    rated(sub.id, True, "lovely")
    rated(sub.id, False)
    local = json.loads(run("feedback", sub.id, "--json"))
    assert (local["ratings"], local["thumbs_up"], local["thumbs_down"]) == (2, 1, 1)
    text = run("feedback", sub.id)
    assert "smol" in text and "2 ratings — 1 up, 1 down" in text and "lovely" in text

    dev = make_dev("alice")
    monkeypatch.setenv("PADDOCK_API_URL", api.url)
    monkeypatch.setenv("PADDOCK_API_KEY", dev.key)
    reset_settings()
    try:
        assert json.loads(run("feedback", sub.id, "--json")) == local
        other = deploy("http://127.0.0.1:9", name="theirs", developer="bob")
        refused = runner.invoke(app, ["feedback", other.id])
        assert refused.exit_code != 0 and "no submission" in str(refused.exception)
    finally:
        monkeypatch.delenv("PADDOCK_API_URL")
        monkeypatch.delenv("PADDOCK_API_KEY")
        reset_settings()


def test_leaderboard_is_empty_until_a_snapshot_exists(via_api: Dev) -> None:
    assert json.loads(run("leaderboard", "--json")) == {"created_at": None, "rows": [], "arena": []}
    assert "no leaderboard yet" in run("leaderboard")
    with session_scope() as session:
        session.add(
            LeaderboardSnapshot(
                rows=[{"model": "smol", "thumbs_up_share": 0.75}],
                arena=[{"model": "smol", "elo": 1012.5}],
            )
        )
    text = run("leaderboard")
    assert "smol" in text and "0.75" in text and "1.01e+03" in text


def test_route_explains_itself(deploy: Deploy, fake: ChatFakeServer) -> None:
    old = deploy(fake.url, name="old", age_s=7200)
    new = deploy(fake.url, name="new", age_s=60)
    rated(new.id, True)
    text = run("route", "--explain")
    assert text.splitlines()[0] == f"beta: old ({old.id})"
    assert "1.0m" in text and "2.0h" in text and "furthest from the target" in text
    pair = json.loads(run("route", "--arena", "--json"))
    assert pair["chosen"] == [old.id, new.id]
