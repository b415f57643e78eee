"""vLLM start-up, part by part, for variants of the local backend side by side.

Each variant starts the same bundle through `deployments.local.LocalBackend`; the parts
(imports, engine and worker spawn, device init, weight load, KV cache, API setup, HTTP
ready) come from `deployments.startup`, i.e. from vLLM's own log lines. Rounds rotate the
variants' order so none always gets the warmest caches, and every ratio is taken within a
round (variant / baseline of the same round) before the median, so drift on a shared
machine cancels. After each start, the first request asking for log-probs (as warm-up's
parity check does) is timed (``1st lp s``: unless the serving plugin counts ranks eagerly,
vLLM compiles its rank kernel on it), and a short load (``--serve`` requests at
concurrency 4, 32 tokens each) checks that a faster start does not cost decoding speed.

Variants:

  baseline     the backend as it was: 3 processes, 1 GiB KV cache, readiness polled every 0.5 s
  ready_watch  readiness: probe the moment uvicorn logs "Application startup complete"
  in_process   VLLM_ENABLE_V1_MULTIPROCESSING=0: the worker runs inside the engine process
               (with OMP_NUM_THREADS as vLLM would give a worker: without it, decoding
               was 5-15x slower)
  kv_fit       KV cache sized to the model's context × 4 sequences (--kv-cache-memory-bytes)
  max_seqs     --max-num-seqs 4 (the cpu stress profile's top concurrency)
  fork_engine  the engine-core process forked from the API server instead of spawned (the
               serving plugin undoes the CPU platform's forced spawn): one import fewer
  eager_ranks  log-prob ranks counted eagerly, not by the kernel vLLM compiles on the first
               request asking for log-probs (the serving plugin's `eager_ranks`)
  combined     all of the above
  default      LocalBackend() as configured now (ready_watch + in_process + fork_engine +
               eager_ranks + kv_fit)
  spare        default, with a spare interpreter started 12 s before (about what serialize
               and upload give SmolLM2 in the pipeline; here nothing competes with its
               imports, so this is the head start's best case): ready counts from the
               hand-over

    .venv/bin/python bench/bench_vllm_start.py [--rounds 3] [--skip-smollm2] \\
        [--variants baseline in_process ...] [--serve 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deployments.base import ServeSpec  # noqa: E402
from deployments.local import LocalBackend  # noqa: E402
from deployments.processes import group_members  # noqa: E402
from deployments.startup import PARTS  # noqa: E402
from paddock.bundle import write_bundle  # noqa: E402
from paddock.stress.loadgen import run_load_sync  # noqa: E402
from paddock.stress.metrics import calculate_metrics  # noqa: E402
from paddock.stress.profiles import LoadProfile  # noqa: E402

CACHE = Path(os.environ.get("PADDOCK_MODEL_CACHE", Path.home() / ".cache/paddock/models"))
BASELINE = dict(
    kv_cache_gib=1,
    ready_poll_s=0.5,
    watch_log=False,
    engine_in_process=False,
    fork_engine=False,
    eager_ranks=False,
)


@dataclass(frozen=True)
class Variant:
    """Backend options over the baseline's."""

    options: dict[str, Any] = field(default_factory=dict)
    from_baseline: bool = True
    # A spare interpreter started this long before the start (`LocalBackend.prestart`).
    head_start_s: float = 0.0


VARIANTS: dict[str, Variant] = {
    "baseline": Variant(),
    "ready_watch": Variant({"watch_log": True}),
    "in_process": Variant({"engine_in_process": True}),
    "kv_fit": Variant({"kv_cache_gib": None}),
    "max_seqs": Variant({"max_num_seqs": 4}),
    "fork_engine": Variant({"fork_engine": True}),
    "eager_ranks": Variant({"eager_ranks": True}),
    "combined": Variant(
        {
            "watch_log": True,
            "engine_in_process": True,
            "fork_engine": True,
            "eager_ranks": True,
            "kv_cache_gib": None,
            "max_num_seqs": 4,
        }
    ),
    "default": Variant(from_baseline=False),
    "spare": Variant(from_baseline=False, head_start_s=12.0),
}


def backend_for(variant: Variant, log_dir: Path) -> LocalBackend:
    opts: dict[str, Any] = {**(BASELINE if variant.from_baseline else {}), **variant.options}
    return LocalBackend(log_dir=log_dir, **opts)


def one_start(
    backend: LocalBackend, spec: ServeSpec, serve: int, timeout: float, head_start_s: float = 0.0
) -> dict[str, Any]:
    if head_start_s:
        backend.prestart(spec.submission_id)
        time.sleep(head_start_s)
    t0 = time.monotonic()
    handle = backend.start(spec)
    try:
        backend.wait_ready(handle, timeout=timeout)
        out: dict[str, Any] = {"ready_s": time.monotonic() - t0, **handle.get("startup", {})}
        out["first_logprobs_s"] = first_logprobs(handle["endpoint"], spec.served_name)
        if serve:
            profile = LoadProfile(
                kind="concurrent",
                concurrency=4,
                num_requests=serve,
                warmup_requests=1,
                max_tokens=32,
                ignore_eos=True,
                request_timeout_s=120,
                max_duration_s=300,
            )
            [run] = run_load_sync(handle["endpoint"], spec.served_name, profile)
            m = calculate_metrics(run.results, run.duration_s, concurrency=4)
            out.update(tpot_ms=m.median_tpot_ms, ttft_ms=m.median_ttft_ms, ok=m.completed)
        return out
    finally:
        backend.stop(handle)
        left = group_members(int(handle["pgid"]))
        if left:
            raise RuntimeError(f"vLLM processes left behind: {left}")


def first_logprobs(endpoint: str, model: str) -> float:
    """Seconds for the server's first request asking for log-probs (8 tokens)."""
    body = {"model": model, "prompt": "Hello", "max_tokens": 8, "logprobs": 2, "temperature": 0}
    t0 = time.monotonic()
    httpx.post(f"{endpoint}/v1/completions", json=body, timeout=120).raise_for_status()
    return time.monotonic() - t0


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Medians per variant, and within-round ratios to the baseline."""
    base = runs.get("baseline", [])
    table: dict[str, dict[str, float]] = {}
    for name, rs in runs.items():
        row: dict[str, float] = {"ready_s": _median([r["ready_s"] for r in rs])}
        row["first_logprobs_s"] = _median([r["first_logprobs_s"] for r in rs])
        for part in PARTS:
            row[part] = _median([r.get("parts", {}).get(part, 0.0) for r in rs])
        if rs and "tpot_ms" in rs[0]:
            row["tpot_ms"] = _median([r["tpot_ms"] for r in rs])
            row["ttft_ms"] = _median([r["ttft_ms"] for r in rs])
        if base:
            pairs = list(zip(rs, base, strict=False))
            row["ready_ratio"] = _median([a["ready_s"] / b["ready_s"] for a, b in pairs])
            if "tpot_ms" in row:
                row["tpot_ratio"] = _median([a["tpot_ms"] / b["tpot_ms"] for a, b in pairs])
        table[name] = row
    return table


def print_table(model: str, table: dict[str, dict[str, float]], rounds: int) -> None:
    short = {
        "imports": "imp",
        "engine_spawn": "eng",
        "worker_spawn": "wrk",
        "device_init": "dev",
        "weight_load": "wts",
        "kv_cache": "kv",
        "api_setup": "api",
        "http_ready": "http",
    }
    head = f"{'variant':<12}{'ready s':>8}{'×base':>7}" + "".join(f"{short[p]:>6}" for p in PARTS)
    head += f"{'1st lp s':>9}"
    serve = any("tpot_ms" in r for r in table.values())
    if serve:
        head += f"{'TPOT ms':>9}{'×base':>7}{'TTFT ms':>9}"
    print(f"\n{model}: medians of {rounds} rounds, seconds per part")
    print(head)
    print("-" * len(head))
    for name, r in table.items():
        line = f"{name:<12}{r['ready_s']:>8.1f}{r.get('ready_ratio', float('nan')):>7.2f}"
        line += "".join(f"{r[p]:>6.1f}" for p in PARTS)
        line += f"{r['first_logprobs_s']:>9.2f}"
        if serve:
            line += (
                f"{r.get('tpot_ms', float('nan')):>9.1f}{r.get('tpot_ratio', float('nan')):>7.2f}"
                f"{r.get('ttft_ms', float('nan')):>9.0f}"
            )
        print(line)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--skip-smollm2", action="store_true")
    ap.add_argument("--skip-tiny", action="store_true")
    ap.add_argument("--serve", type=int, default=8, help="requests after each start (0: none)")
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if "baseline" not in args.variants:
        args.variants.insert(0, "baseline")

    from paddock.testkit.smollm2 import prepare_smollm2
    from paddock.testkit.tiny_model import build_tiny_llama

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-vllm-start-"))
    models: dict[str, Path] = {}
    if not args.skip_tiny:
        models["tiny-llama"] = build_tiny_llama(CACHE / "tiny-llama")
    if not args.skip_smollm2:
        models["SmolLM2-135M"] = prepare_smollm2(CACHE)
    load0 = os.getloadavg()
    print(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}", flush=True)
    results: dict[str, Any] = {"load_start": load0, "models": {}}
    for model, model_dir in models.items():
        bundle = write_bundle(model_dir, work / "bundles" / model, verify=False).path
        spec = ServeSpec(
            submission_id=f"bench-{model}",
            served_name=model,
            bundle_uri=str(bundle),
            max_model_len=args.max_model_len,
        )
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in args.variants}
        for r in range(args.rounds):
            k = r % len(args.variants)
            for name in args.variants[k:] + args.variants[:k]:
                variant = VARIANTS[name]
                backend = backend_for(variant, work / "logs")
                got = one_start(backend, spec, args.serve, args.timeout, variant.head_start_s)
                runs[name].append(got)
                extra = f", TPOT {got['tpot_ms']:.1f} ms" if "tpot_ms" in got else ""
                print(
                    f"  {model} round {r + 1} {name}: ready {got['ready_s']:.1f} s{extra} "
                    f"(load {os.getloadavg()[0]:.2f})",
                    flush=True,
                )
        table = summarize(runs)
        print_table(model, table, args.rounds)
        results["models"][model] = {"runs": runs, "summary": table}
    load1 = os.getloadavg()
    results["load_end"] = load1
    print(f"\nload average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    print(
        "×base: median over rounds of (variant / baseline of the same round); parts: "
        "imp imports, eng engine spawn, wrk worker spawn, dev device init, wts weight "
        "load, kv KV cache + warm-up, api API setup, http uvicorn start + readiness probe"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
