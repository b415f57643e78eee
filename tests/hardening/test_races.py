"""Races: one run per submission, and identical submissions made once — on SQLite and on
a real Postgres, through the service and through the HTTP API."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from sqlalchemy import update
from sqlmodel import col, select

from paddock import accounts, crud, leases, submissions
from paddock.config import reset_settings
from paddock.db import session_scope
from paddock.dispatch import Run
from paddock.models import RunLease, Status, Submission, utcnow
from paddock.testkit.ports import free_port
from tests.hardening.conftest import Hardening

T = TypeVar("T")


def _race(n: int, fn: Callable[[int], T]) -> tuple[list[T], list[BaseException]]:
    """Run fn(0..n-1) in n threads released at once; (results, exceptions)."""
    barrier = threading.Barrier(n)
    results: list[T] = []
    errors: list[BaseException] = []

    def racer(i: int) -> None:
        barrier.wait()
        try:
            results.append(fn(i))
        except BaseException as exc:  # collected, asserted on by the test
            errors.append(exc)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


@dataclass(frozen=True)
class Api:
    url: str
    key: str

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.key}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@contextmanager
def serve_api(database_url: str) -> Iterator[Api]:
    """A real API (uvicorn, in a thread) over `database_url`, with a developer's key."""
    from paddock.api.app import create_app

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PADDOCK_DATABASE_URL", database_url)
        reset_settings()
        developer = accounts.create_developer(name=f"dev-{uuid.uuid4().hex[:10]}")
        key = accounts.issue_key(developer_id=developer.id)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, name="paddock-api", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)
        try:
            yield Api(url=f"http://127.0.0.1:{port}", key=key)
        finally:
            server.should_exit = True
            thread.join(timeout=10)
    reset_settings()


def _new() -> str:
    return crud.create_submission(developer="dev", source="org/model", display_name="m").id


# ------------------------------------------------------------------------------ leases


def test_of_runs_racing_for_a_submission_exactly_one_holds_it(
    database: str, hardening: Hardening
) -> None:
    sid = _new()

    holders, refused = _race(8, lambda i: leases.acquire(sid, holder=f"host-{i}:{100 + i}:x"))

    assert len(holders) == 1 and len(refused) == 7
    assert all(isinstance(e, leases.LeaseHeld) for e in refused), refused
    lease = leases.holder_of(sid)
    assert lease is not None and lease.holder == holders[0]
    # The refusal says who holds it and since when, for the person who ran the second one.
    message = str(refused[0])
    assert f"pid {lease.pid} on {lease.host}" in message and "since" in message
    hardening.record(
        category="race",
        kind="8 runs of one submission at once",
        source=database.split(":")[0].split("+")[0],
        stage="lease",
        outcome="one runs",
        reason=(
            "exactly one takes the lease; 7 are refused, naming the holder's pid, host and start"
        ),
    )


def test_a_released_lease_can_be_taken_and_a_stale_one_taken_over(
    database: str, hardening: Hardening
) -> None:
    sid = _new()
    first = leases.acquire(sid, holder="a:1:x")
    with pytest.raises(leases.LeaseHeld):
        leases.acquire(sid, holder="b:2:x")
    assert leases.heartbeat(sid, first)
    leases.release(sid, first)
    second = leases.acquire(sid, holder="b:2:x")

    # The holder dies: no heartbeat for longer than the staleness limit.
    with session_scope() as session:
        session.connection().execute(
            update(RunLease)
            .where(col(RunLease.submission_id) == sid)
            .values(heartbeat_at=utcnow() - timedelta(hours=1))
        )
    takers, refused = _race(6, lambda i: leases.acquire(sid, holder=f"c{i}:{i}:x"))

    assert len(takers) == 1 and len(refused) == 5
    assert not leases.heartbeat(sid, second), "the dead holder no longer holds it"
    leases.release(sid, second)  # releases nothing: it is not the holder's any more
    assert leases.holder_of(sid) is not None
    hardening.record(
        category="race",
        kind="6 runs at once take over a stale lease",
        source=database.split(":")[0].split("+")[0],
        stage="lease",
        outcome="one takes over",
        reason="exactly one takes it over; the silent holder can neither heartbeat nor release it",
    )


def test_a_second_flow_of_a_held_submission_is_refused_and_changes_nothing(
    prefect_harness: None, hardening: Hardening
) -> None:
    from flows.submission import submission

    sid = _new()
    holder = leases.acquire(sid, holder="elsewhere:4242:x")
    try:
        with pytest.raises(leases.LeaseHeld, match="pid 4242 on elsewhere"):
            submission(sid)
        sub = crud.require_submission(submission_id=sid)
        assert sub.status == Status.submitted and sub.reason is None
        assert crud.stage_runs(submission_id=sid) == []
    finally:
        leases.release(sid, holder)
    hardening.record(
        category="race",
        kind="a second flow of a submission another run holds",
        source="any",
        stage="lease",
        outcome="refused",
        reason="LeaseHeld names the holder; no status change, no stage row",
    )


# ------------------------------------------------------------------------- idempotency


class _NoRun(Run):
    def __init__(self, submission_id: str) -> None:
        self.submission_id = submission_id

    def alive(self) -> bool:
        return False

    def wait(self) -> int:
        return 0


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The runs submit starts, recorded instead of spawned."""
    runs: list[str] = []

    def start(submission_id: str) -> Run:
        runs.append(submission_id)
        return _NoRun(submission_id)

    monkeypatch.setattr(submissions, "start_run", start)
    return runs


def test_identical_submissions_at_once_make_one_submission_and_one_run(
    database: str, started: list[str], hardening: Hardening
) -> None:
    draft = submissions.draft(
        developer="racer",
        source="org/twin",
        revision="main",
        generation_params={"temperature": 0.5},
    )

    results, errors = _race(8, lambda i: submissions.submit(draft))

    assert errors == []
    ids = {sub.id for sub, _run in results}
    assert len(ids) == 1 and len(started) == 1 and started[0] in ids
    joined = [run for _sub, run in results if isinstance(run, submissions.Joined)]
    assert len(joined) == 7
    with session_scope() as session:
        rows = session.exec(select(Submission).where(Submission.developer == "racer")).all()
    assert len(rows) == 1
    hardening.record(
        category="race",
        kind="8 identical submissions at once",
        source=database.split(":")[0].split("+")[0],
        stage="submit",
        outcome="one submission",
        reason="one submission and one run; the other 7 join it",
    )


def test_a_different_part_or_an_ended_twin_makes_a_new_submission(
    database: str, started: list[str], hardening: Hardening
) -> None:
    base: dict[str, Any] = {"developer": "d2", "source": "org/twin", "revision": "v1"}
    first, _ = submissions.submit(submissions.draft(**base))
    again, run = submissions.submit(submissions.draft(**base, name="renamed"))
    assert again.id == first.id and isinstance(run, submissions.Joined)
    other, _ = submissions.submit(submissions.draft(**base, generation_params={"top_k": 5}))
    assert other.id != first.id

    submissions.teardown(submission_id=first.id)  # ended: the same request is a new attempt
    newer, run = submissions.submit(submissions.draft(**base))
    assert newer.id != first.id and not isinstance(run, submissions.Joined)
    assert len(started) == 3
    hardening.record(
        category="race",
        kind="a resubmission differing in one part, or after teardown",
        source=database.split(":")[0].split("+")[0],
        stage="submit",
        outcome="new submission",
        reason="a different part or an ended twin makes a new submission; a rename joins",
    )


def test_identical_posts_at_once_answer_one_201_and_the_rest_200(
    tmp_path: Path, started: list[str], hardening: Hardening
) -> None:
    body = {"source": "org/posted-twin", "revision": "main", "generation_params": {}}

    with serve_api(f"sqlite:///{tmp_path / 'api.db'}") as api:

        def post(_i: int) -> httpx.Response:
            with api.client() as client:
                return client.post("/submissions", json=body)

        answers, errors = _race(6, post)

    assert errors == []
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] * 5 + [201], [(a.status_code, a.json().get("id")) for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert len(started) == 1
    hardening.record(
        category="race",
        kind="6 identical POST /submissions at once",
        source="api",
        stage="submit",
        outcome="one 201, five 200",
        reason="one submission; every answer names it",
    )


def test_a_killed_worker_on_this_machine_does_not_lock_its_submission(
    database: str, hardening: Hardening
) -> None:
    """SIGKILL leaves the lease behind; a run on the same host sees its pid is gone and
    takes the lease at once, instead of waiting for it to go stale."""
    import signal
    import socket
    import subprocess

    sid = _new()
    worker = subprocess.Popen(["sleep", "60"])
    leases.acquire(sid, holder=f"{socket.gethostname()}:{worker.pid}:x")
    with pytest.raises(leases.LeaseHeld, match=f"pid {worker.pid}"):
        leases.acquire(sid)  # alive: refused

    worker.send_signal(signal.SIGKILL)
    worker.wait()
    holder = leases.acquire(sid)

    lease = leases.holder_of(sid)
    assert lease is not None and lease.holder == holder
    hardening.record(
        category="race",
        kind="a run after its worker was SIGKILLed",
        source=database.split(":")[0].split("+")[0],
        stage="lease",
        outcome="taken over at once",
        reason="the dead pid's lease is taken at once, not after it goes stale",
    )
