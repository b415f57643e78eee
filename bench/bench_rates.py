"""Byte rates of the stages whose time grows with the model, for estimating a larger one.

The pipeline bench times whole stages, where a small model's fixed costs (a flow, a
listing, a process start) hide how each stage scales. This bench runs the same functions
the stages call, on the same local servers, and divides bytes by seconds:

    download   paddock.sources.fetch_hub from an olah mirror (resolve, list, snapshot)
    scan       paddock.checks.runtime.check_finite: sanity's read of every weight value
    serialize  paddock.bundle.write_bundle (load the safetensors, write model.tensors,
               read it back against the checked tensors)
    upload     paddock.storage: the bundle's manifest (sha256 of every file) and
               S3Store.put_bundle to a moto server (multipart, checksums, verified)

Rounds are interleaved and every round starts from nothing (a fresh download directory,
a fresh bundle, the bundle deleted from the store), so each figure is a cold stage, with
the page cache as warm as it is for the real stage; the libraries are imported before any
clock starts (a fixed cost, not a rate). Medians of ``--repeat`` rounds.

    .venv/bin/python bench/bench_rates.py [--repeat 3] [--model DIR] [--json out.json]

``--model`` is an HF-layout safetensors directory (default: SmolLM2-135M-Instruct, from
``paddock.testkit.smollm2``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from paddock.bundle import write_bundle  # noqa: E402
from paddock.checks.runtime import check_finite  # noqa: E402
from paddock.sources import NEEDED, FetchPolicy, fetch_hub  # noqa: E402
from paddock.storage import S3Store, bundle_manifest  # noqa: E402
from paddock.testkit.hub import HubMirror  # noqa: E402
from paddock.testkit.s3 import S3Server  # noqa: E402
from paddock.testkit.smollm2 import prepare_smollm2  # noqa: E402

REPO = "paddock-bench/rates"
MB = 1e6


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _warm_imports() -> None:
    """Import what the stages import, once, before any clock starts: a byte rate must
    not carry torch's first import (seconds, paid once per flow process)."""
    import boto3  # noqa: F401
    import huggingface_hub  # noqa: F401
    import safetensors.torch  # noqa: F401
    import tensorizer  # noqa: F401
    import torch  # noqa: F401


def one_round(hub: HubMirror, store: S3Store, work: Path) -> dict[str, dict[str, float]]:
    """Each stage's bytes and seconds, from nothing."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    policy = FetchPolicy(patterns=NEEDED, max_bytes=1 << 40)
    t0 = time.perf_counter()
    snapshot = fetch_hub(
        REPO, None, work / "source", endpoint=hub.endpoint, token=None, policy=policy
    )
    t1 = time.perf_counter()
    check_finite(snapshot.path)
    scanned = time.perf_counter()
    bundle = write_bundle(snapshot.path, work / "bundle")
    t2 = time.perf_counter()
    manifest = bundle_manifest(bundle.path)
    store.put_bundle(bundle.path, manifest)
    t3 = time.perf_counter()
    store.delete_bundle(manifest["digest"])
    weights = sum(p.stat().st_size for p in snapshot.path.glob("*.safetensors"))
    return {
        "download": {"mb": _bytes(snapshot.path) / MB, "s": t1 - t0},
        "scan": {"mb": weights / MB, "s": scanned - t1},
        "serialize": {"mb": (bundle.path / "model.tensors").stat().st_size / MB, "s": t2 - scanned},
        "upload": {"mb": _bytes(bundle.path) / MB, "s": t3 - t2},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", type=Path, help="HF-layout safetensors directory")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    model = args.model or prepare_smollm2(
        Path(os.environ.get("PADDOCK_MODEL_CACHE", Path.home() / ".cache/paddock/models"))
    )
    _warm_imports()
    load0 = os.getloadavg()
    rounds: list[dict[str, dict[str, float]]] = []
    with (
        tempfile.TemporaryDirectory(prefix="paddock-rates-") as tmp,
        S3Server() as s3,
        HubMirror(Path(tmp) / "hub") as hub,
    ):
        hub.add_model(REPO, model)
        s3.create_bucket("rates")
        store = S3Store(
            "rates",
            "bench",
            endpoint_url=s3.endpoint,
            access_key_id=s3.access_key,
            secret_access_key=s3.secret_key,
        )
        for i in range(args.repeat):
            got = one_round(hub, store, Path(tmp) / "work")
            rounds.append(got)
            line = ", ".join(f"{k} {v['mb'] / v['s']:.0f} MB/s" for k, v in got.items())
            print(f"round {i + 1}: {line} (load {os.getloadavg()[0]:.2f})", file=sys.stderr)
    load1 = os.getloadavg()
    summary: dict[str, Any] = {}
    for stage in rounds[0]:
        secs = [r[stage]["s"] for r in rounds]
        mb = rounds[0][stage]["mb"]
        summary[stage] = {
            "mb": round(mb, 1),
            "median_s": round(statistics.median(secs), 3),
            "median_mb_per_s": round(
                statistics.median(r[stage]["mb"] / r[stage]["s"] for r in rounds), 1
            ),
            "each_s": [round(s, 3) for s in secs],
        }
    doc = {
        "model": str(model),
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
        "load_start": load0,
        "load_end": load1,
        "stages": summary,
    }
    print(f"{'stage':<10} {'MB':>8} {'median s':>9} {'MB/s':>8}")
    for stage, s in summary.items():
        print(f"{stage:<10} {s['mb']:>8.1f} {s['median_s']:>9.2f} {s['median_mb_per_s']:>8.0f}")
    print(f"{os.cpu_count()} cores, load average {load0[0]:.2f} → {load1[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
