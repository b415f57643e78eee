"""One deployed model per developer, where configured: publishing a new one retires the
old, atomically — of N of a developer's models publishing at once exactly one stays
live, on SQLite and on Postgres — and the retired model's server is stopped."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import col

from paddock import crud, lifecycle
from paddock.db import session_scope
from paddock.models import Status, Submission
from tests.hardening.conftest import Hardening
from tests.hardening.security_fixtures import deploy_model, settings_env, stand_in_process
from tests.hardening.test_races import _race
from tests.utils.vllm import pid_alive


def _ready_to_publish(developer: str, n: int) -> list[str]:
    """``n`` of ``developer``'s submissions that passed their stress test."""
    ids = [
        crud.create_submission(developer=developer, source=f"org/m{i}", display_name=f"m{i}").id
        for i in range(n)
    ]
    with session_scope() as session:
        session.execute(
            update(Submission)
            .where(col(Submission.id).in_(ids))
            .values(status=Status.stress_testing)
        )
    return ids


def _statuses(ids: list[str]) -> dict[str, Status]:
    found = {}
    for sid in ids:
        sub = crud.get_submission(submission_id=sid)
        assert sub is not None
        found[sid] = sub.status
    return found


def test_of_a_developers_models_publishing_at_once_exactly_one_stays_live(
    database: str,
    hardening: Hardening,
) -> None:
    ids = _ready_to_publish("dana", 6)
    other = _ready_to_publish("omar", 1)  # another developer's model is none of her business
    lifecycle.publish(other[0], "http://127.0.0.1:9/omar", keep=1)

    results, errors = _race(len(ids), lambda i: lifecycle.publish(ids[i], f"http://m{i}", keep=1))

    assert errors == []
    statuses = _statuses(ids)
    live = [sid for sid, status in statuses.items() if status is Status.deployed]
    assert len(live) == 1
    retired = sorted(sid for batch in results for sid in batch)
    assert retired == sorted(set(ids) - set(live))  # each retired once, by whoever came after
    for sid in retired:
        sub = crud.get_submission(submission_id=sid)
        assert sub is not None and sub.status is Status.inactive and sub.endpoint is None
        assert sub.reason is not None and sub.reason.startswith("replaced by ")
    assert _statuses(other) == {other[0]: Status.deployed}
    hardening.record(
        category="race",
        kind="6 of one developer's models published at once, one live allowed",
        source=database.split(":")[0].split("+")[0],
        stage="publish",
        outcome="one live",
        reason="exactly one stayed deployed; the other 5 became inactive, each retired once "
        "by the model published after it",
    )


def test_without_a_limit_every_model_stays_live(database: str) -> None:
    ids = _ready_to_publish("dana", 3)
    for i, sid in enumerate(ids):
        assert lifecycle.publish(sid, f"http://m{i}") == []
    assert set(_statuses(ids).values()) == {Status.deployed}


@pytest.mark.usefixtures("prefect_harness")
def test_the_publish_stage_stops_the_replaced_models_server(tmp_path: Path) -> None:
    from paddock.contracts import Endpoint
    from tasks.publish import publish

    with (
        settings_env(
            PADDOCK_DATABASE_URL=f"sqlite:///{tmp_path / 'one.db'}",
            PADDOCK_MAX_DEPLOYED_PER_DEVELOPER="1",
        ),
        stand_in_process(tmp_path / "logs") as handle,
    ):
        from paddock.db import init_db

        init_db()
        old = deploy_model("http://127.0.0.1:9/old", name="old", developer="dana", handle=handle)
        [new] = _ready_to_publish("dana", 1)

        publish(new, Endpoint(url="http://127.0.0.1:9/new", backend="local", model="new"))

        assert _statuses([old.id, new]) == {old.id: Status.inactive, new: Status.deployed}
        assert not pid_alive(handle["pid"])  # the old model's server was stopped
        assert crud.active_deployment(submission_id=old.id) is None
