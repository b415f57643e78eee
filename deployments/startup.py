"""Where a vLLM server's start-up time goes, read from its own log.

A deploy stage that takes 30 s is one number; what to cut needs the parts. vLLM says what it
is doing as it goes — the API server's first line, the engine-core process's, the worker's,
"Starting to load model", the loader's "Loading weights took", "init engine (profile,
create kv cache, warmup model) took", "Starting vLLM server on" — so consecutive marks give
a breakdown whose parts add up to the whole, from the process start to the moment the
backend saw the server answer:

    imports        process start → the API server's first line (interpreter, vLLM import,
                   argument parsing); for a spare interpreter (`deployments.spares`) the
                   start is its hand-over, so this is what was left of its imports
    engine_spawn   → the engine-core process's first line (config, spawn, its own imports)
    worker_spawn   → the worker process's first line (a third interpreter; absent when the
                   engine runs its worker in-process)
    device_init    → "Starting to load model" (distributed init, model runner)
    weight_load    → the loader's end-of-load line (or the next line of that process)
    kv_cache       → "init engine … took" (memory profile, KV-cache allocation, warm-up)
    api_setup      → "Starting vLLM server on" (tokenizer, chat template, routes)
    http_ready     → the backend's first successful probe (uvicorn start + probe latency)

vLLM stamps lines to the second; the local backend gives it a logging config that adds
milliseconds (`LOGGING_CONFIG`), and the parser reads both. Lines are local time without a
year, so the caller passes the process start as an aware datetime to anchor them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["LOGGING_CONFIG", "PARTS", "StartupProfile", "parse_startup", "utc"]

PARTS = (
    "imports",
    "engine_spawn",
    "worker_spawn",
    "device_init",
    "weight_load",
    "kv_cache",
    "api_setup",
    "http_ready",
)

# vLLM's own format (vllm/logger.py) with milliseconds after the seconds; given to vLLM as
# VLLM_LOGGING_CONFIG_PATH. Messages stay as vLLM writes them; only the stamp is finer, and
# uvicorn's lines get the same prefix and stamp.
LOGGING_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "paddock": {
            "()": "vllm.logging_utils.NewLineFormatter",
            "format": "(%(vllm_process_name)s pid=%(process)d) %(levelname)s "
            "%(asctime)s.%(msecs)03d [%(fileinfo)s:%(lineno)d] %(message)s",
            "datefmt": "%m-%d %H:%M:%S",
        }
    },
    "handlers": {
        "vllm": {
            "class": "logging.StreamHandler",
            "formatter": "paddock",
            "level": "INFO",
            "stream": "ext://sys.stdout",
        }
    },
    # vLLM hands the same file to uvicorn, whose loggers would otherwise go silent: its
    # "Application startup complete" is what the backend watches for.
    "loggers": {
        name: {"handlers": ["vllm"], "level": "INFO", "propagate": False}
        for name in ("vllm", "uvicorn", "uvicorn.error", "uvicorn.access")
    },
}

_LINE = re.compile(
    r"\((?P<proc>[A-Za-z][\w-]*) pid=(?P<pid>\d+)\) (?P<level>[A-Z]+) "
    r"(?P<month>\d\d)-(?P<day>\d\d) (?P<time>\d\d:\d\d:\d\d)(?:[.,](?P<ms>\d{1,6}))? "
    r"\[[^\]]*\] (?P<msg>.*)"
)
_SECONDS = re.compile(r"took ([\d.]+) ?s")
_KV_TOKENS = re.compile(r"KV cache size: ([\d,]+) tokens")
# End-of-load lines: vLLM's default loader, the GPU runner, paddock's CPU tensorizer loader.
_LOADED = ("Loading weights took", "Model loading took", "paddock_serving: loaded")


@dataclass(frozen=True)
class StartupProfile:
    """Seconds per part (in `PARTS` order, absent ones omitted), adding up to ``total_s``."""

    parts: dict[str, float]
    total_s: float
    # 0.001 with paddock's logging config, 1.0 with vLLM's default second stamps.
    resolution_s: float
    # vLLM's own figures where it prints them: init_engine_s, weights_s, kv_cache_tokens.
    facts: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "parts": {k: round(v, 3) for k, v in self.parts.items()},
            "total_s": round(self.total_s, 3),
            "resolution_s": self.resolution_s,
            "facts": dict(self.facts),
        }

    def summary(self) -> str:
        inner = ", ".join(f"{k} {v:.1f}" for k, v in self.parts.items())
        return f"ready in {self.total_s:.1f} s ({inner})"


@dataclass(frozen=True)
class _Line:
    at: datetime
    role: str  # "api" | "engine" | "worker"
    msg: str
    precise: bool


def _role(proc: str) -> str:
    if proc.startswith("APIServer"):
        return "api"
    if "Worker" in proc:
        return "worker"
    return "engine"


def _lines(lines: Iterable[str], anchor: datetime) -> list[_Line]:
    """Timestamped vLLM lines as naive local datetimes near ``anchor`` (also naive local)."""
    out = []
    for raw in lines:
        m = _LINE.search(raw)
        if m is None:
            continue
        hh, mm, ss = (int(x) for x in m["time"].split(":"))
        frac = m["ms"]
        micro = int(frac.ljust(6, "0")) if frac else 0
        try:
            at = datetime(anchor.year, int(m["month"]), int(m["day"]), hh, mm, ss, micro)
        except ValueError:
            continue
        if at < anchor - timedelta(days=180):  # the log crossed New Year
            at = at.replace(year=anchor.year + 1)
        out.append(_Line(at, _role(m["proc"]), m["msg"], frac is not None))
    return out


def parse_startup(
    lines: Iterable[str], *, started: datetime, ready: datetime | None = None
) -> StartupProfile:
    """The start-up breakdown of one server from its log ``lines``.

    ``started`` is when the process was spawned and ``ready`` when the server first
    answered (both aware); without ``ready`` the last part ends at "Starting vLLM server".
    Marks that are missing (a crash, another vLLM version) merge their part into the next
    one, so the parts still add up to the total.
    """
    start_local = started.astimezone().replace(tzinfo=None)
    parsed = _lines(lines, start_local)
    facts: dict[str, float] = {}
    marks: dict[str, datetime] = {}

    def first(pred: Any) -> _Line | None:
        return next((ln for ln in parsed if pred(ln)), None)

    api = first(lambda ln: ln.role == "api")
    engine = first(lambda ln: ln.role == "engine")
    worker = first(lambda ln: ln.role == "worker")
    load = first(lambda ln: "Starting to load model" in ln.msg)
    if api:
        marks["imports"] = api.at
    if engine:
        marks["engine_spawn"] = engine.at
    if worker:
        marks["worker_spawn"] = worker.at
    if load:
        marks["device_init"] = load.at
        after = [ln for ln in parsed if ln.at >= load.at and ln is not load]
        loaded = next((ln for ln in after if any(s in ln.msg for s in _LOADED)), None)
        if loaded is None:  # no end-of-load line: the loading process's next line
            loaded = next((ln for ln in after if ln.role == load.role), None)
        if loaded is not None:
            marks["weight_load"] = loaded.at
            got = _SECONDS.search(loaded.msg) or re.search(r"in ([\d.]+) s", loaded.msg)
            if got:
                facts["weights_s"] = float(got.group(1))
    init = first(lambda ln: "init engine" in ln.msg and "took" in ln.msg)
    if init:
        marks["kv_cache"] = init.at
        got = _SECONDS.search(init.msg)
        if got:
            facts["init_engine_s"] = float(got.group(1))
    kv = first(lambda ln: "KV cache size:" in ln.msg)
    if kv:
        tokens = _KV_TOKENS.search(kv.msg)
        if tokens:
            facts["kv_cache_tokens"] = float(tokens.group(1).replace(",", ""))
    serving = first(lambda ln: "Starting vLLM server on" in ln.msg)
    if serving:
        marks["api_setup"] = serving.at
    end_local = ready.astimezone().replace(tzinfo=None) if ready is not None else None
    if end_local is not None:
        marks["http_ready"] = end_local

    parts: dict[str, float] = {}
    previous = start_local
    for name in PARTS:
        at = marks.get(name)
        if at is None:
            continue
        # A mark earlier than the previous one (second stamps) counts as zero, not negative.
        at = max(at, previous)
        parts[name] = (at - previous).total_seconds()
        previous = at
    total = (previous - start_local).total_seconds()
    precise = bool(parsed) and all(ln.precise for ln in parsed)
    return StartupProfile(parts, total, 0.001 if precise else 1.0, facts)


def utc(ts: str) -> datetime:
    """A handle's ISO ``started_at`` ("…Z") as an aware datetime."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(UTC)
