"""Serving start-up: tensorizer vs safetensors, and tensorizer read throughput.

For the tiny random Llama (always) and SmolLM2-135M (``--smollm2 DIR``, an HF-layout
safetensors directory, e.g. from ``paddock.testkit.smollm2.prepare_smollm2``):

1. vLLM ready time (process start -> /health and /v1/models answer) for
   ``--load-format tensorizer`` on the bundle (model.tensors + small files, through
   ``deployments.local.LocalBackend``) vs ``--load-format safetensors`` on the HF
   directory; same flags otherwise, one server at a time.
2. Read throughput of ``model.tensors``: ``tensorizer.TensorDeserializer`` (all tensors
   materialised on CPU) vs a raw read of the same bytes, and ``safetensors.torch.load_file``
   of the original file for context. Best of ``--repeat`` runs, warm page cache.

Run with the control-plane venv::

    .venv/bin/python bench/bench_serving.py \
        [--smollm2 ~/.cache/paddock/models/SmolLM2-135M-Instruct]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deployments.base import ServeSpec  # noqa: E402
from deployments.local import LocalBackend  # noqa: E402
from paddock.bundle import write_bundle


class SafetensorsBackend(LocalBackend):
    """LocalBackend, but vLLM loads the HF directory's safetensors (the baseline)."""

    def load_args(self, spec: ServeSpec) -> tuple[Path, list[str]]:
        return Path(spec.bundle_uri), ["--load-format", "safetensors"]


def ready_time(backend: LocalBackend, spec: ServeSpec, timeout: float) -> float:
    t0 = time.monotonic()
    handle = backend.start(spec)
    try:
        backend.wait_ready(handle, timeout=timeout)
        return time.monotonic() - t0
    finally:
        backend.stop(handle)


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def read_throughput(bundle: Path, model_dir: Path, repeat: int) -> dict[str, float]:
    import torch
    from safetensors.torch import load_file
    from tensorizer import TensorDeserializer

    path = bundle / "model.tensors"
    size = path.stat().st_size

    def raw() -> None:
        with open(path, "rb", buffering=0) as f:
            while f.read(16 << 20):
                pass

    def tensorizer_load() -> None:
        with TensorDeserializer(str(path), device="cpu", lazy_load=False) as d:
            for v in d.values():
                assert isinstance(v, torch.Tensor)

    st_files = sorted(model_dir.glob("*.safetensors"))
    st_size = sum(f.stat().st_size for f in st_files)

    def safetensors_load() -> None:
        for f in st_files:
            load_file(f)

    raw()  # warm the page cache
    mb = 1024 * 1024
    out = {
        "bytes": float(size),
        "raw": size / mb / best_of(raw, repeat),
        "tensorizer": size / mb / best_of(tensorizer_load, repeat),
        "safetensors": st_size / mb / best_of(safetensors_load, repeat),
    }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--smollm2", type=Path, help="SmolLM2 HF directory (safetensors)")
    ap.add_argument("--workdir", type=Path, help="scratch directory (default: a temp dir)")
    ap.add_argument("--python", type=Path, help="serving interpreter (default: .venv-serving)")
    ap.add_argument("--repeat", type=int, default=3, help="throughput runs (best of)")
    ap.add_argument("--rounds", type=int, default=1, help="server starts per format (median)")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--skip-servers", action="store_true", help="only the throughput part")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    from paddock.testkit.tiny_model import build_tiny_llama

    work = args.workdir or Path(tempfile.mkdtemp(prefix="paddock-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    models = {"tiny-llama": build_tiny_llama(work / "tiny-llama")}
    if args.smollm2:
        models["SmolLM2-135M"] = args.smollm2.expanduser().resolve()

    opts: dict[str, Any] = {"log_dir": work / "logs"}
    if args.python:
        opts["python"] = args.python
    results: dict[str, dict[str, float]] = {}
    for name, model_dir in models.items():
        print(f"== {name}: {model_dir}", flush=True)
        bundle = write_bundle(model_dir, work / "bundles" / name, verify=False).path
        res = read_throughput(bundle, model_dir, args.repeat)
        if not args.skip_servers:
            spec = dict(submission_id=f"bench-{name}", served_name=name, max_model_len=1024)
            runs: dict[str, list[float]] = {"tensorizer": [], "safetensors": []}
            tzr = (LocalBackend(**opts), ServeSpec(bundle_uri=str(bundle), **spec))
            st = (SafetensorsBackend(**opts), ServeSpec(bundle_uri=str(model_dir), **spec))
            for r in range(args.rounds):
                # Alternate the order so neither format always gets the colder caches.
                order = [("tensorizer", tzr), ("safetensors", st)]
                for fmt, (backend, sp) in order if r % 2 == 0 else order[::-1]:
                    t = ready_time(backend, sp, args.timeout)
                    runs[fmt].append(t)
                    print(f"   round {r + 1}: {fmt} ready in {t:.1f}s", flush=True)
            res["ready_tensorizer"] = statistics.median(runs["tensorizer"])
            res["ready_safetensors"] = statistics.median(runs["safetensors"])
        results[name] = res

    print()
    head = f"{'model':<14}{'size MB':>9}{'raw MB/s':>10}{'tensorizer':>12}{'t/raw':>7}" + (
        f"{'safetens.':>11}"
    )
    if not args.skip_servers:
        head += f"{'ready tzr s':>13}{'ready st s':>12}{'tzr/st':>8}"
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        line = (
            f"{name:<14}{r['bytes'] / 2**20:>9.1f}{r['raw']:>10.0f}{r['tensorizer']:>12.0f}"
            f"{r['tensorizer'] / r['raw']:>7.2f}{r['safetensors']:>11.0f}"
        )
        if not args.skip_servers:
            line += (
                f"{r['ready_tensorizer']:>13.1f}{r['ready_safetensors']:>12.1f}"
                f"{r['ready_tensorizer'] / r['ready_safetensors']:>8.2f}"
            )
        print(line)
    print(
        f"\nthroughput columns in MB/s (best of {args.repeat}, warm page cache); "
        "t/raw = tensorizer/raw; ready = process start -> /health + /v1/models "
        f"(median of {args.rounds}); "
        "tzr/st < 1 means tensorizer is faster; safetens. = safetensors.torch.load_file "
        "(mmap: pages are read lazily, so it is an upper bound, not a read rate)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
