"""Submit → deployed, by the wall clock, and where every second of it went — embedded
default and with the stack up, side by side.

Each model goes through ``paddock submit --wait`` on real local servers (one olah hub
mirror, one moto S3 store, local vLLM processes), exactly as a developer's submission
would, in two modes:

    embedded   no server: the command starts the flow in a child process on an
               ephemeral Prefect (a fresh PADDOCK_HOME per submission)
    stack      ``paddock up`` on a temporary home (Prefect server, worker of the process
               pool, deployments, API), started once with this bench's hub and store in
               its environment — the worker's flow runs inherit them; the command is
               pointed at the stack's API (PADDOCK_API_URL, a developer key), so the run
               is a flow run of the ``submission`` deployment on the worker
    streamed   (not by default) the same stack with the serving target's ``local_copy``
               off: the server streams the tensors back from the store instead of mapping
               the copy its run serialized here — that change measured within one run

Before each stack run the bench waits, off the clock, until the stack's spare keeper
holds a spare that has finished importing vLLM, so every run meets a platform at rest.

The wall clock starts before the command is spawned and the submission is deployed when
its publish stage ends; the breakdown splits that interval into consecutive parts, so the
parts add up to the wall time exactly:

    cli            command start → submission row (interpreter, imports, source resolved;
                   through the API in stack mode)
    embedded:
      flow start     → the flow process's first log line (spawn, imports)
      prefect start  → "Beginning flow run" (the ephemeral Prefect server, the run created)
    stack:
      flow run       → the flow run is Scheduled (the API asked the Prefect server)
      worker pickup  → Pending (at once when the API's nudge reaches the worker; else
                     its next poll, every second)
      flow start     → Running (the worker's child process: spawn, imports, engine)
    to 1st stage   → the first stage row
    <stage>        each stage, first start to last end (retries included); a stage run
                   beside others (the runtime checks; the upload, when it overlaps
                   deploy) is shown apart, not in the sum
    between stages from one stage's end to the next's start: Prefect's task orchestration,
                   and waiting for a stage beside the main line to end (its join)
    deploy: …      the deploy stage again, split: before the spawn (spec, config fetch),
                   then vLLM's own parts (`deployments.startup`) up to the stage's end

Timestamps come from the submission and stage_runs rows, the flow log, the Prefect flow
run's states and the vLLM log, all on this machine's clock. Rounds alternate the order of
models and of modes, so drift on a shared machine hits both; the stack stays up (idle)
through the embedded runs, so both modes run on the same machine. Every bundle is deleted
from the store after its run: the store is content-addressed, and a bundle left in place
would make the next identical submission skip its upload. Every submission is torn down
after its run and ``paddock down`` runs at the end whatever happens.

    .venv/bin/python bench/bench_pipeline.py [--runs 3] [--skip-smollm2]
        [--modes embedded stack streamed] [--store local|s3] [--json]

``--json`` prints the same figures (medians, ratios, and every run) as JSON instead of
the table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deployments.startup import PARTS, parse_startup, utc  # noqa: E402
from paddock import lifecycle  # noqa: E402
from paddock.testkit.hub import HubMirror  # noqa: E402
from paddock.testkit.ports import free_port  # noqa: E402
from paddock.testkit.s3 import S3Server  # noqa: E402
from paddock.testkit.smollm2 import prepare_smollm2  # noqa: E402
from paddock.testkit.tiny_model import build_tiny_llama  # noqa: E402

STAGES = [s.name for s in lifecycle.STAGES]
# Stages that run beside others (off the critical path): timed, but not in the sum.
ALONGSIDE = {s.name for s in lifecycle.STAGES if getattr(s, "alongside", ())}
# Run beside deploy when the server maps the run's own bundle (a local server, an S3
# store, `local_copy` on); on the main line before it otherwise.
BESIDE_DEPLOY = "upload"
MODES = ("embedded", "stack", "streamed")
STACKED = ("stack", "streamed")  # the modes that run on the stack
CACHE = Path(os.environ.get("PADDOCK_MODEL_CACHE", Path.home() / ".cache/paddock/models"))
BUCKET = "bench"
PRE_STAGE = [
    "cli",
    "flow run",
    "worker pickup",
    "flow start",
    "prefect start",
    "to 1st stage",
]
_FLOW_LINE = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) \| ")


def _db_time(value: str | None) -> datetime | None:
    """A stored timestamp (naive UTC in SQLite) as an aware datetime."""
    if not value:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


# ----------------------------------------------------------------------------- marks


def _flow_log_marks(log: Path, day: datetime) -> list[tuple[str, datetime]]:
    """Embedded mode: the flow log's first line and its "Beginning flow run" line (the log
    has local wall-clock times of day; ``day`` anchors them)."""
    marks: dict[str, datetime] = {}
    if not log.is_file():
        return []
    local_day = day.astimezone()
    for line in log.read_text(errors="replace").splitlines():
        m = _FLOW_LINE.match(line)
        if m is None:
            continue
        hh, mm, ss, ms = (int(x) for x in m.groups())
        at = local_day.replace(hour=hh, minute=mm, second=ss, microsecond=ms * 1000)
        if at < local_day - timedelta(hours=1):  # past midnight
            at += timedelta(days=1)
        marks.setdefault("flow start", at)
        if "Beginning flow run" in line:
            marks.setdefault("prefect start", at)
            break
    return list(marks.items())


def _flow_run_marks(prefect_api: str, submission_id: str) -> list[tuple[str, datetime]]:
    """Stack mode: when the submission's first flow run became Scheduled, Pending, Running
    (as the Prefect server recorded its states)."""
    body = {
        "flow_runs": {"tags": {"all_": [f"submission:{submission_id}"]}},
        "sort": "EXPECTED_START_TIME_ASC",
        "limit": 1,
    }
    with httpx.Client(base_url=prefect_api, timeout=10) as client:
        runs = client.post("/flow_runs/filter", json=body).json()
        if not runs:
            return []
        states = client.get("/flow_run_states/", params={"flow_run_id": runs[0]["id"]}).json()
    first: dict[str, datetime] = {}
    for state in sorted(states, key=lambda s: s["timestamp"]):
        at = datetime.fromisoformat(state["timestamp"].replace("Z", "+00:00"))
        first.setdefault(state["type"], at)
    names = {"SCHEDULED": "flow run", "PENDING": "worker pickup", "RUNNING": "flow start"}
    return [(names[t], first[t]) for t in names if t in first]


def breakdown(
    db_path: Path, submission_id: str, submitted: datetime, marks: list[tuple[str, datetime]]
) -> dict[str, Any]:
    """Consecutive parts from ``submitted`` to the end of the publish stage, in seconds."""
    db = sqlite3.connect(db_path)
    try:
        (created,) = db.execute(
            "SELECT created_at FROM submissions WHERE id = ?", (submission_id,)
        ).fetchone()
        rows = db.execute(
            "SELECT stage, started_at, ended_at FROM stage_runs WHERE submission_id = ? "
            "ORDER BY started_at",
            (submission_id,),
        ).fetchall()
        handles = [
            json.loads(h)
            for (h,) in db.execute(
                "SELECT handle FROM deployments WHERE submission_id = ? ORDER BY id",
                (submission_id,),
            )
        ]
    finally:
        db.close()
    spans: dict[str, list[datetime]] = {}
    for stage, started, ended in rows:
        s, e = _db_time(started), _db_time(ended) or _db_time(started)
        assert s is not None and e is not None
        span = spans.setdefault(stage, [s, e])
        span[0], span[1] = min(span[0], s), max(span[1], e)
    if "publish" not in spans:
        return {"complete": False}
    parts: dict[str, float] = {}
    at = submitted

    def step(name: str, until: datetime | None) -> None:
        nonlocal at
        if until is None:
            return
        until = max(until, at)
        parts[name] = parts.get(name, 0.0) + (until - at).total_seconds()
        at = until

    step("cli", _db_time(created))
    for name, mark in marks:
        step(name, mark)
    beside_now = set(ALONGSIDE)
    if BESIDE_DEPLOY in spans and "deploy" in spans:
        if spans[BESIDE_DEPLOY][1] > spans["deploy"][0]:  # still under way once deploy began
            beside_now.add(BESIDE_DEPLOY)
    ordered = sorted(
        ((n, span) for n, span in spans.items() if n not in beside_now), key=lambda kv: kv[1][0]
    )
    step("to 1st stage", ordered[0][1][0])
    for stage, (start, end) in ordered:
        # Includes any wait for a stage running alongside to be joined.
        step("between stages", start)
        step(stage, end)
    beside = {n: (e - s).total_seconds() for n, (s, e) in spans.items() if n in beside_now}
    deploy: dict[str, float] = {}
    if "deploy" in spans and handles:
        handle = handles[-1]
        start, end = spans["deploy"]
        spawned = utc(handle["started_at"])
        deploy["before spawn"] = (spawned - start).total_seconds()
        log = Path(handle.get("log_path", ""))
        if log.is_file():
            lines = log.read_text(errors="replace").splitlines()
            prof = parse_startup(lines, started=spawned, ready=end)
            deploy.update(prof.parts)
    return {
        "complete": True,
        "parts": parts,
        "deploy": deploy,
        "alongside": beside,
        "deployed_at": at,
    }


# ----------------------------------------------------------------------------- modes


def _base_env(hub: HubMirror, s3: S3Server, store: str, home: Path) -> dict[str, str]:
    """This bench's hub and store, for a command or for `paddock up` (whose parts —
    the worker, and so its flow runs — inherit the environment they are started with)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PADDOCK_", "PREFECT_"))}
    env.update(
        PADDOCK_HOME=str(home),
        HF_ENDPOINT=hub.endpoint,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        # Prefect gives its ephemeral server 20 s to start, which a busy shared machine
        # can miss; a missed start fails the run instead of measuring it.
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
    )
    if store == "s3":
        env.update(
            PADDOCK_STORE_URL=f"s3://{BUCKET}/{home.name}",
            PADDOCK_S3_ENDPOINT_URL=s3.endpoint,
            PADDOCK_S3_ACCESS_KEY_ID=s3.access_key,
            PADDOCK_S3_SECRET_ACCESS_KEY=s3.secret_key,
        )
    else:
        env["PADDOCK_STORE_URL"] = str(home.parent / f"{home.name}-store")
    return env


def _paddock(
    *args: str, env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paddock.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class Stack:
    """A stack this bench brought up, and how to reach it."""

    home: Path
    env: dict[str, str]  # what `paddock up`/`down` ran with
    cli_env: dict[str, str]  # a developer's command pointed at the API
    prefect_api: str
    ports: tuple[int, int]
    up_s: float
    _local_copy: bool = True  # the serving target's, as `paddock up` seeded it

    def local_copy(self, on: bool) -> None:
        """Set the serving target's ``local_copy`` on the stack's Prefect (the next flow
        run loads the block afresh); outside any run's clock."""
        if on == self._local_copy:
            return
        code = (
            "from blocks import serving_target; from blocks.defaults import SERVING; "
            f"t = serving_target(); t.local_copy = {on}; t.save(SERVING, overwrite=True)"
        )
        env = {**self.env, "PREFECT_API_URL": self.prefect_api}
        subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True, timeout=120)
        self._local_copy = on


def _cpu_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime + stime


def wait_spare_settled(home: Path, timeout: float = 120.0) -> bool:
    """Until the stack's spare keeper holds a spare that has finished importing vLLM (its
    CPU time stops growing), so every run meets a platform at rest; outside any run's
    clock. False if none settled in time (the run is then measured anyway, and says so)."""
    log = home / "stack" / "logs" / "spares.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            lines = log.read_text().splitlines()
        except OSError:
            lines = []
        started = [m for line in lines if (m := re.search(r"spare pid (\d+) importing", line))]
        if started:
            pid = int(started[-1].group(1))
            before = _cpu_ticks(pid)
            time.sleep(1.0)
            after = _cpu_ticks(pid)
            if before is not None and after is not None and after - before < 5:
                return True
        else:
            time.sleep(1.0)
    return False


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextmanager
def stack_up(root: Path, hub: HubMirror, s3: S3Server, store: str) -> Iterator[Stack]:
    """`paddock up` on a fresh home; `paddock down` when the block ends, however it ends."""
    home = root / "stack"
    prefect_port, api_port = free_port(), free_port()
    env = _base_env(hub, s3, store, home)
    env.update(
        PADDOCK_PREFECT_PORT=str(prefect_port),
        PADDOCK_API_PORT=str(api_port),
        # A run must go to the worker; without the deployment, fail instead of falling
        # back to a child process and timing the wrong thing.
        PADDOCK_DISPATCH="deployment",
        # The feedback and maintenance schedules would run beside the bench's runs.
        PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false",
    )
    began = time.monotonic()
    try:
        up = _paddock("up", env=env)
        up_s = time.monotonic() - began
        if up.returncode != 0:
            raise RuntimeError(f"paddock up failed: {up.stdout[-2000:]}{up.stderr[-2000:]}")
        made = _paddock("developer", "create", "bench", "--json", env=env, timeout=120)
        if made.returncode != 0:
            raise RuntimeError(f"paddock developer create failed: {made.stderr[-2000:]}")
        cli_env = {
            **env,
            "PADDOCK_API_URL": f"http://127.0.0.1:{api_port}",
            "PADDOCK_API_KEY": json.loads(made.stdout)["key"],
        }
        yield Stack(
            home,
            env,
            cli_env,
            f"http://127.0.0.1:{prefect_port}/api",
            (prefect_port, api_port),
            up_s,
        )
    finally:
        down = _paddock("down", env=env, timeout=180)
        if down.returncode != 0:
            print(f"paddock down: {down.stdout}{down.stderr}", file=sys.stderr)
        busy = [p for p in (prefect_port, api_port) if _listening(p)]
        if busy:
            print(f"still listening after paddock down: ports {busy}", file=sys.stderr)


# ----------------------------------------------------------------------------- one run


def _empty_store(s3: S3Server, store: str, env: dict[str, str]) -> None:
    """Delete every bundle under the run's prefix (so the next identical submission
    uploads again, as a new model would)."""
    if store != "s3":
        import shutil

        shutil.rmtree(env["PADDOCK_STORE_URL"], ignore_errors=True)
        return
    prefix = env["PADDOCK_STORE_URL"].removeprefix(f"s3://{BUCKET}/") + "/"
    client = s3.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})


def _teardown_all(db_path: Path, env: dict[str, str], since: datetime) -> None:
    """Tear down every submission made since ``since``: the one measured, and any a
    failed or interrupted command left behind (runs are detached from the command)."""
    if not db_path.is_file():
        return
    db = sqlite3.connect(db_path)
    try:
        naive = since.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
        ids = [
            i
            for (i,) in db.execute(
                "SELECT id FROM submissions WHERE created_at >= ? AND status != 'torndown'",
                (naive,),
            )
        ]
    finally:
        db.close()
    for sid in ids:
        _paddock("teardown", sid, env=env, timeout=180)
    # A detached flow told to stop goes on writing to its home for a moment; wait for it
    # (a second run of the flow would find the submission torn down and stop at once).
    deadline = time.monotonic() + 60
    while ids and time.monotonic() < deadline and _flow_alive(ids):
        time.sleep(0.5)


def _flow_alive(ids: list[str]) -> bool:
    """Whether a flow process of one of these submissions still runs on this machine."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"flows.submission" in argv and any(i.encode() in argv for i in ids):
            return True
    return False


def run_one(
    mode: str,
    repo: str,
    *,
    env: dict[str, str],
    db_path: Path,
    prefect_api: str | None,
    s3: S3Server,
    store: str,
) -> dict[str, Any]:
    submitted = datetime.now(UTC)
    started = time.perf_counter()
    report: dict[str, Any] = {}
    try:
        done = _paddock(
            "submit", repo, "--name", repo.split("/")[-1], "--wait", "--json", env=env, timeout=1200
        )
        exited = time.perf_counter() - started
        try:
            report = json.loads(done.stdout or "{}")
        except ValueError:
            report = {}
        out: dict[str, Any] = {"status": report.get("status"), "exit_s": exited}
        if not report.get("id") or report.get("status") != "deployed":
            out["error"] = (done.stderr or done.stdout or "")[-2000:]
            return out
        sid = report["id"]
        if mode in STACKED:
            assert prefect_api is not None
            marks = _flow_run_marks(prefect_api, sid)
        else:
            marks = _flow_log_marks(db_path.parent / "logs" / f"{sid}.flow.log", submitted)
        clock = breakdown(db_path, sid, submitted, marks)
        if clock.get("complete"):
            wall = (clock["deployed_at"] - submitted).total_seconds()
            out.update(
                wall_s=wall,
                parts=clock["parts"],
                deploy=clock["deploy"],
                alongside=clock["alongside"],
                after_deployed_s=exited - wall,
                tensors_mb=_tensors_bytes(report) / 1e6,
            )
        return out
    finally:
        _teardown_all(db_path, env, submitted - timedelta(seconds=1))
        _empty_store(s3, store, env)


def _tensors_bytes(report: dict[str, Any]) -> int:
    sizes = [a["size"] for a in report.get("artifacts", []) if a["uri"].endswith("model.tensors")]
    return sizes[0] if sizes else 0


# ----------------------------------------------------------------------------- figures


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "wall_s" in r]
    names: list[str] = []
    for r in ok:
        names += [n for n in r["parts"] if n not in names]
    deploy_names = [p for p in ("before spawn", *PARTS) if any(p in r["deploy"] for r in ok)]
    return {
        "runs": len(runs),
        "deployed": len(ok),
        "wall_s": _median([r["wall_s"] for r in ok]),
        "wall_s_each": [round(r["wall_s"], 2) for r in ok],
        "exit_s": _median([r["exit_s"] for r in ok]),
        "after_deployed_s": _median([r["after_deployed_s"] for r in ok]),
        "parts": {n: _median([r["parts"].get(n, 0.0) for r in ok]) for n in names},
        "deploy": {n: _median([r["deploy"].get(n, 0.0) for r in ok]) for n in deploy_names},
        "alongside": {
            n: _median([r["alongside"][n] for r in ok if n in r["alongside"]])
            for n in dict.fromkeys(n for r in ok for n in r["alongside"])
        },
        "tensors_mb": _median([r["tensors_mb"] for r in ok]),
    }


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 and a == a and b == b else float("nan")


def _row_order(name: str) -> int:
    order = [*PRE_STAGE, *STAGES, "between stages"]
    return order.index(name) if name in order else len(order)


def print_table(summaries: dict[str, dict[str, dict[str, Any]]], caption: str) -> None:
    table = Table(title="submit → deployed, seconds per part (medians)", caption=caption)
    table.add_column("part")
    cols: list[tuple[str, str]] = []
    for repo, by_mode in summaries.items():
        short = repo.split("/")[-1]
        for mode in by_mode:
            table.add_column(f"{short}\n{mode}", justify="right")
            cols.append((repo, mode))
        for other in ("embedded", "streamed"):
            if {"stack", other} <= set(by_mode):
                table.add_column(f"{short}\nstack/{other[:4]}.", justify="right")
                cols.append((repo, f"ratio:{other}"))

    def cells(get: Any, fmt: str = "{:.1f}") -> list[str]:
        out: list[str] = []
        for repo, mode in cols:
            if mode.startswith("ratio:"):
                a, b = get(summaries[repo]["stack"]), get(summaries[repo][mode[6:]])
                out.append(f"{_ratio(a, b):.2f}" if a and b else "")
            else:
                value = get(summaries[repo][mode])
                out.append(fmt.format(value) if value is not None else "")
        return out

    rows: list[str] = []
    subs: list[str] = []
    for by_mode in summaries.values():
        for s in by_mode.values():
            rows += [n for n in s["parts"] if n not in rows]
            subs += [n for n in s["deploy"] if n not in subs]
    rows.sort(key=_row_order)
    for name in rows:
        table.add_row(name, *cells(lambda s, n=name: s["parts"].get(n)))
        if name == "deploy":
            for sub in subs:
                got = cells(lambda s, n=sub: s["deploy"].get(n))
                table.add_row(f"  deploy: {sub}", *got, style="dim")
    beside: list[str] = []
    for by_mode in summaries.values():
        for s in by_mode.values():
            beside += [n for n in s["alongside"] if n not in beside]
    for name in beside:
        got = cells(lambda s, n=name: s["alongside"].get(n))
        table.add_row(f"{name} (alongside; not in the sum)", *got, style="dim")
    # Each run's parts add up to its wall time; the medians of the parts need not add up
    # to the median of the walls.
    table.add_row("sum of the parts' medians", *cells(lambda s: sum(s["parts"].values())))
    table.add_row("submit → deployed (wall)", *cells(lambda s: s["wall_s"]), style="bold")
    table.add_row("after deployed (flow end, exit)", *cells(lambda s: s["after_deployed_s"]))
    table.add_row(
        "deployed / runs",
        *[
            ""
            if m.startswith("ratio:")
            else f"{summaries[r][m]['deployed']}/{summaries[r][m]['runs']}"
            for r, m in cols
        ],
    )
    table.add_row("model.tensors MB", *cells(lambda s: s["tensors_mb"]))
    Console(width=200).print(table)


# ----------------------------------------------------------------------------- main


def _interrupted(signum: int, _frame: Any) -> None:
    """SIGTERM (or SIGHUP) unwinds like Ctrl-C, so every `finally` — teardown, `paddock
    down`, the hub's and moto's stop — still runs."""
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--skip-smollm2", action="store_true")
    parser.add_argument("--store", choices=["local", "s3"], default="s3")
    parser.add_argument("--runs", type=int, default=3, help="submissions per model and mode")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["embedded", "stack"])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--save", type=Path, help="also write the JSON figures to this file")
    args = parser.parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupted)

    models = [("paddock-bench/tiny-llama", build_tiny_llama(CACHE / "tiny-llama"))]
    if not args.skip_smollm2:
        models.append(("HuggingFaceTB/SmolLM2-135M-Instruct", prepare_smollm2(CACHE)))
    modes: list[str] = list(dict.fromkeys(args.modes))
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        repo: {mode: [] for mode in modes} for repo, _ in models
    }
    load0 = os.getloadavg()
    code0 = _code_version()
    began = time.monotonic()
    up_s: float | None = None
    with (
        tempfile.TemporaryDirectory(prefix="paddock-bench-") as tmp,
        S3Server() as s3,
        HubMirror(Path(tmp) / "hub") as hub,
    ):
        s3.create_bucket(BUCKET)
        for repo, model_dir in models:
            hub.add_model(repo, model_dir)
        wanted = any(m in STACKED for m in modes)
        with _maybe_stack(wanted, Path(tmp), hub, s3, args.store) as stack:
            up_s = stack.up_s if stack else None
            for i in range(args.runs):
                # Models and modes alternate within a round, so drift hits both.
                for repo, _ in models if i % 2 == 0 else models[::-1]:
                    for mode in modes if i % 2 == 0 else modes[::-1]:
                        if mode in STACKED:
                            assert stack is not None
                            stack.local_copy(mode == "stack")
                            if not wait_spare_settled(stack.home):
                                print(
                                    f"{repo} {mode} run {i + 1}: no settled spare; "
                                    "its deploy may import vLLM",
                                    file=sys.stderr,
                                )
                            env, db = stack.cli_env, stack.home / "paddock.db"
                            prefect_api: str | None = stack.prefect_api
                        else:
                            home = Path(tmp) / f"{repo.replace('/', '_')}-{i}"
                            env = _base_env(hub, s3, args.store, home)
                            env["PADDOCK_DISPATCH"] = "embedded"
                            db, prefect_api = home / "paddock.db", None
                        got = run_one(
                            mode,
                            repo,
                            env=env,
                            db_path=db,
                            prefect_api=prefect_api,
                            s3=s3,
                            store=args.store,
                        )
                        got["load_after"] = os.getloadavg()[0]
                        runs[repo][mode].append(got)
                        print(
                            f"{repo} {mode} run {i + 1}: {got.get('status')}, "
                            f"wall {got.get('wall_s', float('nan')):.1f} s "
                            f"(load {os.getloadavg()[0]:.2f})",
                            file=sys.stderr,
                            flush=True,
                        )
                        if "error" in got:
                            print(got["error"], file=sys.stderr)
    load1 = os.getloadavg()
    summaries = {
        repo: {mode: summarize(rs) for mode, rs in by_mode.items()}
        for repo, by_mode in runs.items()
    }
    ratios = {
        repo: _ratio(by_mode["stack"]["wall_s"], by_mode["embedded"]["wall_s"])
        for repo, by_mode in summaries.items()
        if {"stack", "embedded"} <= set(by_mode)
    }
    machine = f"{os.cpu_count()} cores, load average {load0[0]:.2f} → {load1[0]:.2f}"
    doc = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "code": code0 if code0 == (code1 := _code_version()) else f"{code0} → {code1}",
        "store": args.store,
        "runs_per_cell": args.runs,
        "cpus": os.cpu_count(),
        "load_start": load0,
        "load_end": load1,
        "bench_s": time.monotonic() - began,
        "stack_up_s": up_s,
        "ratio_wall_stack_over_embedded": ratios,
        "summary": summaries,
        "runs": {
            repo: {
                mode: [{k: v for k, v in r.items() if k != "deployed_at"} for r in rs]
                for mode, rs in by_mode.items()
            }
            for repo, by_mode in runs.items()
        },
    }
    if args.save:
        args.save.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
        return
    up = f"; paddock up took {up_s:.1f} s (not counted)" if up_s is not None else ""
    print_table(
        summaries,
        f"median of {args.runs} runs per cell; store {args.store}; {machine}{up}; "
        f"code {doc['code']}",
    )


def _code_version() -> str:
    """The commit the flows ran from, and whether the checkout had other changes (runs
    import the working tree, which other people may be editing)."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    changed = [line[3:] for line in dirty if line.strip()]
    return f"{head} + {len(changed)} modified files" if changed else head


@contextmanager
def _maybe_stack(
    wanted: bool, root: Path, hub: HubMirror, s3: S3Server, store: str
) -> Iterator[Stack | None]:
    if not wanted:
        yield None
        return
    with stack_up(root, hub, s3, store) as stack:
        yield stack


if __name__ == "__main__":
    main()
