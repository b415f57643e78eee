"""The chat API under load: many users at once, each starting a conversation, sending a few
messages (streamed replies) and rating it once — against a deployed model.

Reported: p50/p99 of time to first token and total time per message (as the user sees
them, through paddock), the same for conversation starts and ratings, and error counts by
kind. Checked: every rating the API accepted is stored exactly once (a share of the users
send theirs twice, as a client retrying after a lost answer would; the second must be a
409 and store nothing), and no 5xx came back except a 503 for a model that is down.

The load generator is `httpx.AsyncClient`, as paddock's own stress test
(`paddock/stress/loadgen.py`) uses, not locust: a reply is a server-sent event stream
whose first text event is the figure that matters, which locust's request timing does
not see (it times until headers or the whole body); each user is a short script whose
outcome (the rating's id) is checked against the database afterwards, which is a plain
coroutine here; and locust's gevent monkey-patching does not mix with the asyncio and
threads paddock's pieces run on. One pooled client keeps the generator cheap on a small
machine that also runs the API and the model.

The API runs as its own process (uvicorn, one worker, as `paddock serve` does) with the
per-address conversation-start limit off: every simulated user comes from 127.0.0.1.

    .venv/bin/python bench/bench_chat_load.py                  # tiny Llama on vLLM (CPU)
    .venv/bin/python bench/bench_chat_load.py --fake           # a fake model server
    .venv/bin/python bench/bench_chat_load.py --users 200 --turns 2 --max-tokens 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]

__all__ = [
    "Reply",
    "UserRun",
    "LoadRun",
    "FeedbackCheck",
    "run_users",
    "check_feedback",
    "summary",
]

TOPICS = ["rivers", "kites", "bread", "trains", "maps", "rain", "tea", "clocks", "gardens"]
# What a user is told when the model (not paddock) is the problem: relay.ModelDown and the
# router's "no model can take" — the only 5xx the API may answer.
_MODEL_DOWN = ("stopped answering", "no model can take")


@dataclass(slots=True)
class Reply:
    """One message's answer as the user saw it."""

    status: int | None  # None: no HTTP answer (a transport error)
    ttft_ms: float | None = None
    total_ms: float | None = None
    problem: str | None = None  # an error kind; None for a reply that ended well


@dataclass(slots=True)
class UserRun:
    user_id: str
    start_status: int | None = None
    start_ms: float | None = None
    conversation_id: str | None = None
    replies: list[Reply] = field(default_factory=list)
    feedback_status: int | None = None
    feedback_ms: float | None = None
    feedback_id: int | None = None
    repeat_status: int | None = None  # the duplicate rating, when this user sent one
    problems: list[str] = field(default_factory=list)


@dataclass(slots=True)
class LoadRun:
    users: list[UserRun]
    wall_s: float


def _kind(status: int, body: str) -> str:
    if status == 503 and any(s in body for s in _MODEL_DOWN):
        return "503 model down"
    return f"HTTP {status}"


async def _message(client: httpx.AsyncClient, path: str, text: str) -> Reply:
    t0 = perf_counter()
    try:
        async with client.stream("POST", path, json={"content": text}) as resp:
            if resp.status_code != 200:
                body = (await resp.aread()).decode(errors="replace")
                return Reply(resp.status_code, problem=_kind(resp.status_code, body))
            reply = Reply(200)
            buf = b""
            async for chunk in resp.aiter_bytes():
                buf += chunk
                while (i := buf.find(b"\n\n")) >= 0:
                    event, buf = buf[:i], buf[i + 2 :]
                    if not event.startswith(b"data: "):
                        continue
                    data = json.loads(event[6:])
                    if "delta" in data and reply.ttft_ms is None and data["delta"]:
                        reply.ttft_ms = (perf_counter() - t0) * 1000
                    elif "error" in data:
                        reply.problem = "stream broke off"
                    elif data.get("done"):
                        reply.total_ms = (perf_counter() - t0) * 1000
            if reply.total_ms is None and reply.problem is None:
                reply.problem = "stream ended without done"
            if reply.ttft_ms is None and reply.total_ms is not None:
                reply.ttft_ms = reply.total_ms  # an empty reply: its end is its first token
            return reply
    except httpx.HTTPError as exc:
        return Reply(None, problem=f"transport: {type(exc).__name__}")


async def _user(
    client: httpx.AsyncClient,
    index: int,
    *,
    turns: int,
    ramp_s: float,
    repeat_rating: bool,
    seed: int,
) -> UserRun:
    rng = random.Random(seed + index)
    run = UserRun(user_id=f"load-user-{seed}-{index:05d}")
    await asyncio.sleep(rng.uniform(0, ramp_s))  # a crowd arrives, not one packet
    try:
        t0 = perf_counter()
        started = await client.post("/chat/conversations", json={"user_id": run.user_id})
        run.start_ms = (perf_counter() - t0) * 1000
        run.start_status = started.status_code
        if started.status_code != 201:
            run.problems.append(_kind(started.status_code, started.text))
            return run
        cid = str(started.json()["conversation_id"])
        run.conversation_id = cid
        for turn in range(turns):
            topic = TOPICS[(index + turn) % len(TOPICS)]
            text = f"Tell me something short about {topic}. ({index}.{turn})"
            reply = await _message(client, f"/chat/conversations/{cid}/messages", text)
            run.replies.append(reply)
            if reply.problem:
                run.problems.append(reply.problem)
        body = {"thumbs_up": rng.random() < 0.7, "text": f"load test rating {index}"}
        t0 = perf_counter()
        rated = await client.post(f"/chat/conversations/{cid}/feedback", json=body)
        run.feedback_ms = (perf_counter() - t0) * 1000
        run.feedback_status = rated.status_code
        if rated.status_code == 201:
            run.feedback_id = int(rated.json()["feedback_id"])
        else:
            run.problems.append(_kind(rated.status_code, rated.text))
        if repeat_rating:
            again = await client.post(f"/chat/conversations/{cid}/feedback", json=body)
            run.repeat_status = again.status_code
    except httpx.HTTPError as exc:
        run.problems.append(f"transport: {type(exc).__name__}")
    return run


async def run_users(
    base_url: str,
    users: int,
    *,
    turns: int = 2,
    ramp_s: float = 2.0,
    repeat_every: int = 10,
    seed: int = 0,
    timeout_s: float = 300.0,
) -> LoadRun:
    """``users`` users at once, each: start, ``turns`` messages, one rating (every
    ``repeat_every``-th user sends the rating twice; 0: nobody does)."""
    # Idle connections are dropped sooner than the server drops them (uvicorn: 5 s), or a
    # request sent on one the server is closing at that moment fails with a ReadError.
    limits = httpx.Limits(
        max_connections=users + 8, max_keepalive_connections=users + 8, keepalive_expiry=2.0
    )
    async with httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=timeout_s, trust_env=False
    ) as client:
        t0 = perf_counter()
        runs = await asyncio.gather(
            *(
                _user(
                    client,
                    i,
                    turns=turns,
                    ramp_s=ramp_s,
                    repeat_rating=bool(repeat_every) and i % repeat_every == 0,
                    seed=seed,
                )
                for i in range(users)
            )
        )
        return LoadRun(list(runs), perf_counter() - t0)


@dataclass(frozen=True, slots=True)
class FeedbackCheck:
    accepted: int  # ratings answered 201
    stored: int  # feedback rows of this run's conversations
    exactly_once: int  # accepted ratings stored once, under the id the API returned
    duplicates_refused: int  # second ratings answered 409
    duplicates_sent: int
    unanswered_stored: int  # ratings without a 201 that were stored anyway (at most once)

    @property
    def ok(self) -> bool:
        return (
            self.exactly_once == self.accepted
            and self.stored == self.accepted + self.unanswered_stored
            and self.duplicates_refused == self.duplicates_sent
        )


def check_feedback(run: LoadRun) -> FeedbackCheck:
    """Every accepted rating in the database once (read in this process, which must use
    the API's PADDOCK_HOME / PADDOCK_DATABASE_URL)."""
    from sqlmodel import col, select

    from paddock.db import session_scope
    from paddock.models import Feedback

    ids = [u.conversation_id for u in run.users if u.conversation_id]
    with session_scope() as session:
        rows = list(session.exec(select(Feedback).where(col(Feedback.conversation_id).in_(ids))))
    per_conversation = Counter(r.conversation_id for r in rows)
    by_conversation = {r.conversation_id: r.id for r in rows}
    accepted = [u for u in run.users if u.feedback_status == 201]
    once = len(
        [
            u
            for u in accepted
            if per_conversation[u.conversation_id or ""] == 1
            and by_conversation.get(u.conversation_id or "") == u.feedback_id
        ]
    )
    unanswered = [
        u for u in run.users if u.conversation_id and u.feedback_status != 201
    ]  # a rating whose answer was lost may have been stored; never twice
    repeats = [u for u in run.users if u.repeat_status is not None]
    return FeedbackCheck(
        accepted=len(accepted),
        stored=len(rows),
        exactly_once=once,
        duplicates_refused=sum(1 for u in repeats if u.repeat_status == 409),
        duplicates_sent=len(repeats),
        unanswered_stored=sum(
            1 for u in unanswered if per_conversation[u.conversation_id or ""] == 1
        ),
    )


def _pcts(values: Sequence[float | None]) -> dict[str, float | None]:
    xs = [v for v in values if v is not None]
    if not xs:
        return {"n": 0, "p50": None, "p99": None}
    return {
        "n": len(xs),
        "p50": round(float(np.percentile(xs, 50)), 1),
        "p99": round(float(np.percentile(xs, 99)), 1),
    }


def summary(run: LoadRun) -> dict[str, Any]:
    replies = [r for u in run.users for r in u.replies]
    good = [r for r in replies if r.problem is None]
    problems = Counter(p for u in run.users for p in u.problems)
    server_errors = {k: n for k, n in problems.items() if k.startswith("HTTP 5")}
    return {
        "users": len(run.users),
        "wall_s": round(run.wall_s, 2),
        "messages": len(replies),
        "messages_ok": len(good),
        "ttft_ms": _pcts([r.ttft_ms for r in good]),
        "total_ms": _pcts([r.total_ms for r in good]),
        "start_ms": _pcts([u.start_ms for u in run.users if u.start_status == 201]),
        "feedback_ms": _pcts([u.feedback_ms for u in run.users if u.feedback_status == 201]),
        "errors": dict(sorted(problems.items())),
        "unexpected_5xx": sum(server_errors.values()),  # a 503 "model down" is not one
    }


# --------------------------------------------------------------------------- the bench


@contextmanager
def _api(port: int, env: dict[str, str], log: Path) -> Iterator[str]:
    from paddock.testkit.ports import wait_for_port

    cmd = [
        sys.executable, "-m", "uvicorn", "paddock.api.app:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        "--no-access-log",
    ]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)


def _register(endpoint: str, name: str, bundle: Path | None, params: dict[str, Any]) -> str:
    """A deployed submission served at ``endpoint`` (the pipeline is not what is measured);
    its bundle linked where the relay finds the tokenizer to cut prompts with."""
    from paddock import crud
    from paddock.config import get_settings
    from paddock.db import session_scope
    from paddock.models import Status, Submission

    sub = crud.create_submission(
        developer="bench", source=f"bench/{name}", display_name=name, generation_params=params
    )
    with session_scope() as session:
        row = session.get(Submission, sub.id)
        assert row is not None
        row.status = Status.deployed
        session.add(row)
    crud.record_deployment(
        submission_id=sub.id, backend="bench", endpoint=endpoint, handle={"served_name": name}
    )
    if bundle is not None:
        link = get_settings().work_dir / sub.id / "bundle"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(bundle, target_is_directory=True)
    return sub.id


@contextmanager
def _model(args: argparse.Namespace, home: Path) -> Iterator[tuple[str, Path | None, str]]:
    """(endpoint, bundle, what) of the model to talk to, for the run's duration."""
    if args.endpoint:
        yield args.endpoint, None, f"the server at {args.endpoint}"
        return
    if args.fake:
        sys.path.insert(0, str(ROOT))
        from tests.stress.fakeserver import FakeServer

        with FakeServer(tokens=args.max_tokens, token_delay_s=0.005) as fake:
            yield fake.url, None, f"FakeServer ({args.max_tokens} tokens, 5 ms apart)"
        return
    from deployments.base import ServeSpec
    from deployments.local import LocalBackend
    from paddock.bundle import write_bundle
    from paddock.testkit.tiny_model import build_tiny_llama

    cache = Path(os.environ.get("PADDOCK_TEST_CACHE", Path.home() / ".cache" / "paddock-tests"))
    repo = build_tiny_llama(cache / "tiny-llama")
    bundle = write_bundle(repo, home / "bundle" / "sha-tiny").path
    backend = LocalBackend(log_dir=home / "logs")
    spec = ServeSpec("bench-chat-load", "tiny", str(bundle), max_model_len=512)
    t0 = time.monotonic()
    handle = backend.start(spec)
    try:
        endpoint = backend.wait_ready(handle, timeout=600)
        print(f"vLLM (tiny random Llama, CPU) ready in {time.monotonic() - t0:.0f} s")
        yield endpoint, bundle, "vLLM on CPU serving the tiny random Llama"
    finally:
        backend.stop(handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200, help="concurrent conversations")
    parser.add_argument("--turns", type=int, default=2, help="messages per conversation")
    parser.add_argument("--max-tokens", type=int, default=16, help="reply length cap")
    parser.add_argument("--ramp-s", type=float, default=2.0, help="arrivals spread over")
    parser.add_argument("--repeat-every", type=int, default=10, help="every Nth rates twice")
    parser.add_argument("--fake", action="store_true", help="a fake model server, not vLLM")
    parser.add_argument("--endpoint", help="an OpenAI-compatible server already running")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-chat-load-"))
    os.environ.update(
        PADDOCK_HOME=str(home),
        PREFECT_HOME=str(home / "prefect"),
        PADDOCK_RATE_STARTS_PER_MINUTE_PER_IP="0",  # every user comes from 127.0.0.1
    )
    os.environ.pop("PADDOCK_DATABASE_URL", None)
    sys.path.insert(0, str(ROOT))
    from paddock.config import reset_settings
    from paddock.db import init_db
    from paddock.testkit.ports import free_port

    reset_settings()
    init_db()
    (home / "logs").mkdir(parents=True, exist_ok=True)
    params = {"max_output_tokens": args.max_tokens, "stopping_words": [], "temperature": 0.0}
    with _model(args, home) as (endpoint, bundle, what):
        _register(endpoint, "tiny", bundle, params)
        with _api(free_port(), dict(os.environ), home / "logs" / "api.log") as url:
            run = asyncio.run(
                run_users(
                    url,
                    args.users,
                    turns=args.turns,
                    ramp_s=args.ramp_s,
                    repeat_every=args.repeat_every,
                )
            )
    figures = summary(run)
    check = check_feedback(run)
    figures["feedback"] = {
        "accepted": check.accepted,
        "stored": check.stored,
        "exactly_once": check.exactly_once,
        "duplicates_refused": f"{check.duplicates_refused}/{check.duplicates_sent}",
        "ok": check.ok,
    }
    figures["model"] = what
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        _print(figures, args)
    if not check.ok or figures["unexpected_5xx"]:
        raise SystemExit(1)


def _print(f: dict[str, Any], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{f['users']} concurrent conversations × {args.turns} messages "
        f"(≤ {args.max_tokens} tokens) + a rating — {f['model']}, {f['wall_s']} s"
    )
    for col in ("what", "n", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right")
    for key, label in (
        ("ttft_ms", "message: time to first token"),
        ("total_ms", "message: total"),
        ("start_ms", "conversation start"),
        ("feedback_ms", "rating"),
    ):
        p = f[key]
        table.add_row(label, str(p["n"]), str(p["p50"]), str(p["p99"]))
    console = Console()
    console.print(table)
    console.print(f"messages answered whole: {f['messages_ok']}/{f['messages']}")
    console.print(f"errors by kind: {f['errors'] or 'none'}")
    console.print(f"unexpected 5xx: {f['unexpected_5xx']}")
    fb = f["feedback"]
    console.print(
        f"ratings accepted {fb['accepted']}, stored {fb['stored']}, exactly once "
        f"{fb['exactly_once']}, duplicates refused {fb['duplicates_refused']}: "
        + ("OK" if fb["ok"] else "FAILED")
    )


if __name__ == "__main__":
    main()
