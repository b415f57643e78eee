"""Chat-side benchmarks: what the relay adds to a reply, and how fast ratings are stored.

(a) Relay overhead: the same kind of streaming chat request sent straight to a model
    endpoint and through paddock's OpenAI-compatible route (a real uvicorn serving
    `create_app()`, which plans the prompt, stores the conversation and both turns, and
    relays the stream), at each concurrency; p50/p99 time to first token and total time,
    the milliseconds paddock adds and the ratio. Against the fake streaming server by
    default; also against a vLLM endpoint with ``--endpoint URL --model NAME`` (the served
    model name). Every request gets a prompt of its own (same length for both paths), so
    vLLM's prefix cache favours neither, and the two paths alternate in rounds so a busy
    machine's drift hits both alike.
(b) Feedback writes per second: `verdicts.end_with_feedback` from each number of
    ``--writers`` threads (default 1, 32, 128: one rater at a time, then bursts), on SQLite
    (goal >= 1,000/s) and, when the testkit finds PostgreSQL's binaries, on Postgres
    (goal >= 3,000/s). Concurrent ratings share a transaction (a group commit), so the
    figure grows with the burst; a single rater waits for its own fsync.

    .venv/bin/python bench/bench_relay.py
    .venv/bin/python bench/bench_relay.py --endpoint http://127.0.0.1:8000 --model smol
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from time import perf_counter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
_HOME = Path(tempfile.mkdtemp(prefix="bench-relay-"))
os.environ["PADDOCK_HOME"] = str(_HOME)
os.environ["PREFECT_HOME"] = str(_HOME / "prefect")
os.environ.pop("PADDOCK_DATABASE_URL", None)
# The rate limits guard a shared service from one client; this bench is one client on
# purpose, measuring what the relay adds, so they are off.
for _limit in ("SUBMISSIONS_PER_HOUR", "CHAT_PER_MINUTE", "STARTS_PER_MINUTE_PER_IP"):
    os.environ[f"PADDOCK_RATE_{_limit}"] = "0"

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from paddock import crud, verdicts  # noqa: E402
from paddock.config import reset_settings  # noqa: E402
from paddock.db import session_scope  # noqa: E402
from paddock.models import Conversation, ConversationMode, Status, Submission  # noqa: E402
from paddock.testkit.ports import free_port, wait_for_port  # noqa: E402

console = Console()
TOPICS = ["rivers", "kites", "bread", "trains", "maps", "rain", "tea", "clocks", "gardens"]


# --------------------------------------------------------------------------- servers


@contextmanager
def process(cmd: list[str], port: int, what: str) -> Iterator[None]:
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        try:
            wait_for_port(port, timeout=60)
        except TimeoutError:
            proc.kill()
            tail = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            raise SystemExit(f"{what} did not start:\n{tail}") from None
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def register(endpoint: str, name: str) -> Submission:
    """A deployed submission served at ``endpoint`` (the pipeline is not what is measured)."""
    sub = crud.create_submission(developer="bench", source=f"bench/{name}", display_name=name)
    with session_scope() as session:
        row = session.get(Submission, sub.id)
        assert row is not None
        row.status = Status.deployed
        session.add(row)
    crud.record_deployment(
        submission_id=sub.id, backend="bench", endpoint=endpoint, handle={"served_name": name}
    )
    return sub


# --------------------------------------------------------------------------- (a) relay


def bodies(model: str, n: int, max_tokens: int, nonce: str) -> list[bytes]:
    out = []
    for i in range(n):
        text = f"Tell me three short facts about {TOPICS[i % len(TOPICS)]}. [{nonce}-{i:06d}]"
        payload = {
            "model": model,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens,
            "stream": True,
        }
        out.append(json.dumps(payload).encode())
    return out


async def one(client: httpx.AsyncClient, url: str, body: bytes) -> tuple[float, float]:
    """(ms to the first chunk carrying text, ms to the end of the stream); raises on error."""
    t0 = perf_counter()
    ttft = None
    async with client.stream("POST", url, content=body) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"HTTP {resp.status_code}: {(await resp.aread())[:200]!r}")
        buf = b""
        async for chunk in resp.aiter_bytes():
            buf += chunk
            while (i := buf.find(b"\n\n")) >= 0:
                event, buf = buf[:i], buf[i + 2 :]
                if ttft is None and event.startswith(b"data: {"):
                    choices = json.loads(event[6:]).get("choices") or [{}]
                    if choices[0].get("delta", {}).get("content"):
                        ttft = (perf_counter() - t0) * 1000
    total = (perf_counter() - t0) * 1000
    if ttft is None:
        raise RuntimeError("no text in the stream")
    return ttft, total


async def run_batch(
    client: httpx.AsyncClient, url: str, batch: list[bytes], concurrency: int
) -> list[tuple[float, float]]:
    queue = list(reversed(batch))
    out: list[tuple[float, float]] = []

    async def worker() -> None:
        while queue:
            out.append(await one(client, url, queue.pop()))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


async def compare(
    direct_url: str, paddock_url: str, model: str, *, n: int, concurrency: int, rounds: int,
    max_tokens: int,
) -> dict[str, list[tuple[float, float]]]:  # fmt: skip
    limits = httpx.Limits(
        max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2
    )
    results: dict[str, list[tuple[float, float]]] = {"direct": [], "paddock": []}
    urls = {"direct": direct_url, "paddock": paddock_url}
    per_round = max(n // rounds, concurrency)
    async with httpx.AsyncClient(
        limits=limits, timeout=120, trust_env=False, headers={"Content-Type": "application/json"}
    ) as client:
        for path, url in urls.items():  # warm both paths (connections, caches, imports)
            await run_batch(
                client, url, bodies(model, concurrency * 2, max_tokens, f"w{path}"), concurrency
            )
        for r in range(rounds):
            order = ("direct", "paddock") if r % 2 == 0 else ("paddock", "direct")
            for path in order:
                batch = bodies(model, per_round, max_tokens, f"{path}-{concurrency}-{r}")
                results[path] += await run_batch(client, urls[path], batch, concurrency)
    return results


def relay_table(title: str, rows: list[tuple[int, dict[str, list[tuple[float, float]]]]]) -> Table:
    table = Table(title=title)
    for col in ("conc", "metric", "direct ms", "via paddock ms", "added ms", "ratio"):
        table.add_column(col, justify="right")
    for conc, res in rows:
        for k, label in ((0, "TTFT"), (1, "total")):
            for q in (50, 99):
                d = float(np.percentile([x[k] for x in res["direct"]], q))
                p = float(np.percentile([x[k] for x in res["paddock"]], q))
                table.add_row(
                    str(conc), f"{label} p{q}", f"{d:.1f}", f"{p:.1f}", f"{p - d:+.1f}",
                    f"{p / d:.2f}",
                )  # fmt: skip
    return table


def bench_relay(args: argparse.Namespace) -> list[Table]:
    tables = []
    fake_port, api_port = free_port(), free_port()
    fake_cmd = [
        sys.executable, "-m", "tests.stress.fakeserver", str(fake_port), str(args.tokens),
        str(args.first_token_s), str(args.token_s),
    ]  # fmt: skip
    api_cmd = [
        sys.executable, "-m", "uvicorn", "paddock.api.app:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(api_port), "--log-level", "warning",
        "--no-access-log",
    ]  # fmt: skip
    api_url = f"http://127.0.0.1:{api_port}/v1/chat/completions"
    with (
        process(fake_cmd, fake_port, "the fake model server"),
        process(api_cmd, api_port, "the API"),
    ):
        fake = f"http://127.0.0.1:{fake_port}"
        register(fake, "fake")
        targets = [("fake server", fake, "fake")]
        if args.endpoint:
            endpoint = args.endpoint.rstrip("/").removesuffix("/v1")
            register(endpoint, args.model)
            targets.append((f"vLLM {args.model}", endpoint, args.model))
        for label, endpoint, model in targets:
            rows = []
            for conc in args.concurrency:
                res = asyncio.run(
                    compare(
                        f"{endpoint}/v1/chat/completions", api_url, model, n=args.requests,
                        concurrency=conc, rounds=args.rounds, max_tokens=args.tokens,
                    )
                )  # fmt: skip
                rows.append((conc, res))
            n = sum(len(r["direct"]) for _, r in rows)
            tables.append(
                relay_table(
                    f"relay overhead — {label}: {args.tokens} tokens/reply, {n} requests per path",
                    rows,
                )
            )
    return tables


# --------------------------------------------------------------------------- (b) feedback


def feedback_rate(n: int, writers: int) -> float:
    """Ratings stored per second by ``writers`` threads rating ``n`` fresh conversations."""
    sub = crud.create_submission(developer="bench", source="bench/fb", display_name="fb")
    ids = []
    with session_scope() as session:
        for _ in range(n):
            conv = Conversation(mode=ConversationMode.beta, user_hash="h", submission_id=sub.id)
            session.add(conv)
            ids.append(conv.id)

    def rate(cid: str) -> None:
        verdicts.end_with_feedback(
            conversation_id=cid, thumbs_up=True, text="quick and helpful, thanks"
        )

    with ThreadPoolExecutor(writers) as pool:
        t0 = perf_counter()
        list(pool.map(rate, ids, chunksize=8))
        return n / (perf_counter() - t0)


def bench_feedback(args: argparse.Namespace) -> Table:
    table = Table(title="feedback writes per second (verdicts.end_with_feedback)")
    for col in ("database", "writers", "writes", "writes/s", "goal", "ratio to goal"):
        table.add_column(col, justify="right")

    def measure(db: str, goal: int) -> None:
        for writers in args.writers:
            n = args.writes if writers > 1 else max(args.writes // 5, 200)
            rate = feedback_rate(n, writers)
            table.add_row(
                db, str(writers), str(n), f"{rate:,.0f}", f"{goal:,}", f"{rate / goal:.2f}"
            )

    measure("SQLite", 1000)
    from paddock.testkit import postgres

    if postgres.available():
        with postgres.PostgresServer() as pg:
            os.environ["PADDOCK_DATABASE_URL"] = pg.url
            reset_settings()
            try:
                measure("Postgres", 3000)
            finally:
                os.environ.pop("PADDOCK_DATABASE_URL", None)
                reset_settings()
    else:
        console.print("PostgreSQL binaries not found: Postgres row skipped")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", help="a vLLM endpoint to measure as well")
    parser.add_argument("--model", help="the endpoint's served model name")
    parser.add_argument("--requests", type=int, default=200, help="per path and concurrency")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=32, help="output tokens per reply")
    parser.add_argument("--first-token-s", type=float, default=0.02, help="fake server prefill")
    parser.add_argument("--token-s", type=float, default=0.002, help="fake server per token")
    parser.add_argument("--writes", type=int, default=5000)
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 32, 128])
    parser.add_argument("--skip-relay", action="store_true")
    parser.add_argument("--skip-feedback", action="store_true")
    args = parser.parse_args()
    if args.endpoint and not args.model:
        parser.error("--endpoint needs --model (the served model name)")
    started = time.monotonic()
    tables = [] if args.skip_relay else bench_relay(args)
    if not args.skip_feedback:
        tables.append(bench_feedback(args))
    for table in tables:
        console.print(table)
    console.print(f"({os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
                  f"{time.monotonic() - started:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
