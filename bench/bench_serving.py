"""Serving start-up: tensorizer vs safetensors, and tensorizer read throughput.

For the tiny random Llama (always) and SmolLM2-135M (``--smollm2 DIR``, an HF-layout
safetensors directory, e.g. from ``paddock.testkit.smollm2.prepare_smollm2``):

1. Read throughput of ``model.tensors``, every reader interleaved within a round and each
   round's figures divided by that round's raw read, median of ``--repeat`` rounds (warm
   page cache):

   - ``raw``: the file read through one reused 16 MiB buffer (the bytes, nothing else);
   - ``raw_fresh``: the file read into one fresh allocation of its size — what any loader
     that keeps the tensors pays, since each new page is faulted in and zeroed by the
     kernel before the copy lands in it;
   - ``tzr …``: ``tensorizer.TensorDeserializer`` with every tensor materialised on CPU,
     under its knobs: ``num_readers`` (None: tensorizer's choice, 8 threads for a local
     file), ``lazy_load``, ``plaid_mode`` (accepted and ignored since tensorizer 2.x);
   - ``safetensors``: ``safetensors.torch.load_file`` of the original (mmap: pages come in
     lazily, so an upper bound, not a read rate);
   - ``→params …``: what a vLLM load does with them, every tensor copied into a
     preallocated (already touched) parameter: through tensorizer's reader (vLLM's
     path), through the serving plugin's mapping of the same file
     (``paddock_serving.mapped``), and through safetensors' ``safe_open`` of the original.

   With ``--s3``, the same file streamed from a moto S3 server in its own process, as a
   deployed server streams it (tensorizer over curl), by ``num_readers`` and curl's
   ``buffer_size``, against a raw stream of the object.

2. vLLM ready time (process start -> /health and /v1/models answer) for
   ``--load-format tensorizer`` on the bundle (through ``deployments.local.LocalBackend``,
   with its loader extra-config) vs ``--load-format safetensors`` on the HF directory;
   same backend otherwise, one server at a time, order alternating, the ratio taken per
   round before the median; the weight-load part from vLLM's own log lines beside it.

Run with the control-plane venv::

    .venv/bin/python bench/bench_serving.py \\
        [--smollm2 ~/.cache/paddock/models/SmolLM2-135M-Instruct] [--rounds 3] [--s3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "serving"))  # paddock_serving.mapped: torch + tensorizer only

from deployments.base import ServeSpec  # noqa: E402
from deployments.local import LocalBackend  # noqa: E402
from paddock.bundle import write_bundle  # noqa: E402

MB = 1024 * 1024


class SafetensorsBackend(LocalBackend):
    """LocalBackend, but vLLM loads the HF directory's safetensors (the baseline)."""

    def load_args(self, spec: ServeSpec) -> tuple[Path, list[str]]:
        return Path(spec.bundle_uri), ["--load-format", "safetensors"]


def ready_time(backend: LocalBackend, spec: ServeSpec, timeout: float) -> tuple[float, float, str]:
    """(seconds to ready, seconds of the weight-load part from vLLM's log, a greedy reply)."""
    import httpx

    t0 = time.monotonic()
    handle = backend.start(spec)
    try:
        backend.wait_ready(handle, timeout=timeout)
        ready = time.monotonic() - t0
        parts = handle.get("startup", {}).get("parts", {})
        # Both formats must serve the same weights: the same greedy continuation.
        reply = httpx.post(
            f"{handle['endpoint']}/v1/completions",
            json={
                "model": spec.served_name,
                "prompt": "The capital of France is",
                "max_tokens": 12,
                "temperature": 0,
            },
            timeout=120,
        ).json()["choices"][0]["text"]
        return ready, float(parts.get("weight_load", float("nan"))), reply
    finally:
        backend.stop(handle)


def readers(bundle: Path, model_dir: Path) -> dict[str, tuple[Callable[[], None], int]]:
    """Every reader of the throughput table: (one read of the file, bytes it reads)."""
    import torch
    from paddock_serving.mapped import mapped_tensors
    from safetensors import safe_open
    from safetensors.torch import load_file
    from tensorizer import TensorDeserializer

    path = bundle / "model.tensors"
    size = path.stat().st_size

    def raw() -> None:
        buf = bytearray(16 * MB)
        view = memoryview(buf)
        with open(path, "rb", buffering=0) as f:
            while f.readinto(view):
                pass

    def raw_fresh() -> None:
        dest = torch.empty(size, dtype=torch.uint8)
        view = dest.numpy().data.cast("B")
        with open(path, "rb", buffering=0) as f:
            done = 0
            while done < size:
                got = f.readinto(view[done : done + 16 * MB])
                if not got:
                    break
                done += got

    def tzr(**kw: Any) -> Callable[[], None]:
        def run() -> None:
            with TensorDeserializer(str(path), device="cpu", **kw) as d:
                for v in d.values():
                    assert isinstance(v, torch.Tensor)

        return run

    with TensorDeserializer(str(path), device="cpu", lazy_load=True) as d:
        shapes = {k: (v.shape, v.dtype) for k, v in d.items()}
    params = {k: torch.empty(s, dtype=t) for k, (s, t) in shapes.items()}
    for p in params.values():  # touched once, as vLLM's allocated parameters are
        p.zero_()

    def tzr_stream() -> None:
        with TensorDeserializer(str(path), device="cpu") as d:
            for k, v in d.items():
                params[k].copy_(v)

    def mapped_stream() -> None:
        views = mapped_tensors(path)
        assert views is not None, "the bundle cannot be mapped"
        for k, v in views:
            params[k].copy_(v)

    st_files = sorted(model_dir.glob("*.safetensors"))
    st_size = sum(f.stat().st_size for f in st_files)

    def safetensors_load() -> None:
        for f in st_files:
            load_file(f)

    def safetensors_stream() -> None:
        for f in st_files:
            with safe_open(str(f), framework="pt") as st:
                for k in st.keys():  # noqa: SIM118 - safe_open has no __iter__
                    if k in params:
                        params[k].copy_(st.get_tensor(k))

    return {
        "raw": (raw, size),
        "raw_fresh": (raw_fresh, size),
        "tzr default": (tzr(), size),
        "tzr readers=1": (tzr(num_readers=1), size),
        "tzr readers=2": (tzr(num_readers=2), size),
        "tzr readers=4": (tzr(num_readers=4), size),
        "tzr lazy": (tzr(lazy_load=True), size),
        "tzr lazy readers=2": (tzr(lazy_load=True, num_readers=2), size),
        "tzr plaid": (tzr(plaid_mode=True), size),
        "safetensors": (safetensors_load, st_size),
        "→params tzr": (tzr_stream, size),
        "→params mapped": (mapped_stream, size),
        "→params safetensors": (safetensors_stream, st_size),
    }


def s3_readers(bundle: Path, endpoint: str) -> dict[str, tuple[Callable[[], None], int]]:
    """Readers of the same file streamed from S3 (moto, in its own process), as the
    deployed server reads it: tensorizer over curl, by ``num_readers`` and curl's
    ``buffer_size``, beside a raw stream of the object into a reused buffer."""
    import boto3
    import torch
    from tensorizer import TensorDeserializer
    from tensorizer.stream_io import open_stream

    path = bundle / "model.tensors"
    size = path.stat().st_size
    keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **keys)
    client.create_bucket(Bucket="bench")
    client.upload_file(str(path), "bench", "model.tensors")
    uri = "s3://bench/model.tensors"
    stream_kw: dict[str, Any] = {
        "s3_endpoint": endpoint,
        "s3_access_key_id": "testing",
        "s3_secret_access_key": "testing",
        "force_http": True,
    }

    def raw() -> None:
        buf = memoryview(bytearray(16 * MB))
        left = size
        with open_stream(uri, **stream_kw) as f:
            while left:  # curl's stream refuses a read past its end
                left -= f.readinto(buf[: min(left, len(buf))])

    def tzr(readers: int | None, buffer: int | None) -> Callable[[], None]:
        def run() -> None:
            stream = open_stream(uri, buffer_size=buffer, **stream_kw)
            with TensorDeserializer(stream, device="cpu", num_readers=readers) as d:
                for v in d.values():
                    assert isinstance(v, torch.Tensor)

        return run

    out: dict[str, tuple[Callable[[], None], int]] = {"raw": (raw, size)}
    for readers_n in (1, 2, 4, 8):
        out[f"tzr s3 readers={readers_n}"] = (tzr(readers_n, None), size)
    out["tzr s3 readers=2 buf=16M"] = (tzr(2, 16 * MB), size)
    out["tzr s3 readers=8 buf=16M"] = (tzr(8, 16 * MB), size)
    return out


def moto_process() -> tuple[Any, str]:
    """moto's S3 in a child process: in this one it would share the GIL with the reader."""
    import subprocess

    from paddock.testkit.ports import free_port, wait_for_port

    port = free_port()
    code = (
        "import time; from paddock.testkit.s3 import S3Server; "
        f"S3Server(port={port}).start(); time.sleep(10**6)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    wait_for_port(port, timeout=60)
    return proc, f"http://127.0.0.1:{port}"


def read_throughput(
    bundle: Path,
    model_dir: Path,
    repeat: int,
    funcs: dict[str, tuple[Callable[[], None], int]] | None = None,
) -> dict[str, dict[str, float]]:
    """MB/s per reader (median of rounds) and its ratio to the raw read of the same round."""
    funcs = funcs if funcs is not None else readers(bundle, model_dir)
    funcs["raw"][0]()  # warm the page cache
    rates: dict[str, list[float]] = {k: [] for k in funcs}
    ratios: dict[str, list[float]] = {k: [] for k in funcs}
    names = list(funcs)
    for r in range(repeat):
        k = r % len(names)
        got: dict[str, float] = {}
        for name in names[k:] + names[:k]:
            fn, size = funcs[name]
            t0 = time.perf_counter()
            fn()
            got[name] = size / MB / (time.perf_counter() - t0)
        for name, rate in got.items():
            rates[name].append(rate)
            ratios[name].append(rate / got["raw"])
    return {
        name: {"mb_s": statistics.median(rates[name]), "vs_raw": statistics.median(ratios[name])}
        for name in funcs
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--smollm2", type=Path, help="SmolLM2 HF directory (safetensors)")
    ap.add_argument("--workdir", type=Path, help="scratch directory (default: a temp dir)")
    ap.add_argument("--python", type=Path, help="serving interpreter (default: .venv-serving)")
    ap.add_argument("--repeat", type=int, default=7, help="throughput rounds (median)")
    ap.add_argument("--rounds", type=int, default=3, help="server starts per format (median)")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--skip-servers", action="store_true", help="only the throughput part")
    ap.add_argument("--s3", action="store_true", help="also stream the file from moto S3")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    if args.workdir is None:
        # Bundles of every model land here: a temporary one goes when the bench ends.
        with tempfile.TemporaryDirectory(prefix="paddock-bench-") as tmp:
            return _run(args, Path(tmp))
    args.workdir.mkdir(parents=True, exist_ok=True)
    return _run(args, args.workdir)


def _run(args: argparse.Namespace, work: Path) -> int:
    from paddock.testkit.tiny_model import build_tiny_llama

    models = {"tiny-llama": build_tiny_llama(work / "tiny-llama")}
    if args.smollm2:
        models["SmolLM2-135M"] = args.smollm2.expanduser().resolve()

    opts: dict[str, Any] = {"log_dir": work / "logs"}
    if args.python:
        opts["python"] = args.python
    load0 = os.getloadavg()
    print(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}", flush=True)
    results: dict[str, dict[str, Any]] = {}
    for name, model_dir in models.items():
        print(f"== {name}: {model_dir}", flush=True)
        bundle = write_bundle(model_dir, work / "bundles" / name, verify=False).path
        res: dict[str, Any] = {
            "bytes": (bundle / "model.tensors").stat().st_size,
            "throughput": read_throughput(bundle, model_dir, args.repeat),
        }
        if args.s3:
            moto, endpoint = moto_process()
            try:
                funcs = s3_readers(bundle, endpoint)
                res["throughput_s3"] = read_throughput(bundle, model_dir, args.repeat, funcs)
            finally:
                moto.terminate()
                moto.wait(10)
        if not args.skip_servers:
            spec: dict[str, Any] = dict(
                submission_id=f"bench-{name}", served_name=name, max_model_len=1024
            )
            runs: dict[str, list[tuple[float, float]]] = {"tensorizer": [], "safetensors": []}
            replies: set[str] = set()
            tzr = (LocalBackend(**opts), ServeSpec(bundle_uri=str(bundle), **spec))
            st = (SafetensorsBackend(**opts), ServeSpec(bundle_uri=str(model_dir), **spec))
            for r in range(args.rounds):
                # Alternate the order so neither format always gets the colder caches.
                order = [("tensorizer", tzr), ("safetensors", st)]
                for fmt, (backend, sp) in order if r % 2 == 0 else order[::-1]:
                    t, load, reply = ready_time(backend, sp, args.timeout)
                    runs[fmt].append((t, load))
                    replies.add(reply)
                    print(
                        f"   round {r + 1}: {fmt} ready in {t:.1f}s (weights {load:.2f}s)",
                        flush=True,
                    )
            pairs = list(zip(runs["tensorizer"], runs["safetensors"], strict=True))
            res["ready"] = {
                "tensorizer_s": statistics.median(t for t, _ in runs["tensorizer"]),
                "safetensors_s": statistics.median(t for t, _ in runs["safetensors"]),
                "ratio": statistics.median(a[0] / b[0] for a, b in pairs),
                "weights_tensorizer_s": statistics.median(w for _, w in runs["tensorizer"]),
                "weights_safetensors_s": statistics.median(w for _, w in runs["safetensors"]),
                "same_replies": len(replies) == 1,
            }
        results[name] = res

    load1 = os.getloadavg()
    for name, res in results.items():
        print(f"\n{name}: model.tensors {res['bytes'] / MB:.1f} MiB")
        print(f"{'reader':<22}{'MB/s':>8}{'× raw':>8}")
        for reader, fig in res["throughput"].items():
            print(f"{reader:<22}{fig['mb_s']:>8.0f}{fig['vs_raw']:>8.2f}")
        if "throughput_s3" in res:
            print(f"{'from S3 (moto)':<22}{'MB/s':>8}{'× raw':>8}   raw: the object streamed")
            for reader, fig in res["throughput_s3"].items():
                print(f"{reader:<22}{fig['mb_s']:>8.0f}{fig['vs_raw']:>8.2f}")
        if "ready" in res:
            r = res["ready"]
            print(
                f"vLLM ready: tensorizer {r['tensorizer_s']:.1f} s, safetensors "
                f"{r['safetensors_s']:.1f} s, tzr/st {r['ratio']:.2f} (median of per-round "
                f"ratios, {args.rounds} rounds); weight load {r['weights_tensorizer_s']:.2f} s "
                f"vs {r['weights_safetensors_s']:.2f} s; greedy replies "
                + ("identical" if r["same_replies"] else "DIFFER")
            )
    print(
        f"\nthroughput: median of {args.repeat} interleaved rounds, warm page cache; × raw is "
        "the per-round ratio to the raw read; ratio < 1 in vLLM ready means tensorizer is "
        f"faster. load average at start {load0[0]:.2f}, at end {load1[0]:.2f}"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
