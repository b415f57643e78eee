"""Stage times of the whole submission pipeline, tiny model and SmolLM2-135M side by side.

Each model goes through `paddock submit --wait` on real local servers (an olah hub mirror,
a moto S3 store, a local vLLM process), exactly as a developer's submission would; the
table prints each stage's seconds from the recorded timeline.

    .venv/bin/python bench/bench_pipeline.py [--skip-smollm2] [--store local|s3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from paddock import lifecycle  # noqa: E402
from paddock.testkit.hub import HubMirror  # noqa: E402
from paddock.testkit.s3 import S3Server  # noqa: E402
from paddock.testkit.smollm2 import prepare_smollm2  # noqa: E402
from paddock.testkit.tiny_model import build_tiny_llama  # noqa: E402

STAGES = [s.name for s in lifecycle.STAGES]
CACHE = Path(os.environ.get("PADDOCK_MODEL_CACHE", Path.home() / ".cache/paddock/models"))


def run_one(repo: str, model_dir: Path, store: str, s3: S3Server, work: Path) -> dict[str, Any]:
    home = work / repo.replace("/", "_")
    with HubMirror(home / "hub") as hub:
        hub.add_model(repo, model_dir)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PADDOCK_", "PREFECT_"))}
        env.update(
            PADDOCK_HOME=str(home),
            HF_ENDPOINT=hub.endpoint,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
        )
        if store == "s3":
            env.update(
                PADDOCK_STORE_URL="s3://bench/" + repo.replace("/", "_"),
                PADDOCK_S3_ENDPOINT_URL=s3.endpoint,
                PADDOCK_S3_ACCESS_KEY_ID=s3.access_key,
                PADDOCK_S3_SECRET_ACCESS_KEY=s3.secret_key,
            )
        started = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "paddock.cli",
                "submit",
                repo,
                "--name",
                repo.split("/")[-1],
                "--wait",
                "--json",
            ],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        report = json.loads(done.stdout or "{}")
        if report.get("id"):
            subprocess.run(
                [sys.executable, "-m", "paddock.cli", "teardown", report["id"]],
                env=env,
                cwd=ROOT,
                capture_output=True,
            )
    report["wall_seconds"] = wall
    return report


def _tensors_bytes(report: dict[str, Any]) -> int:
    sizes = [a["size"] for a in report.get("artifacts", []) if a["uri"].endswith("model.tensors")]
    return sizes[0] if sizes else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-smollm2", action="store_true")
    parser.add_argument("--store", choices=["local", "s3"], default="s3")
    args = parser.parse_args()

    models = [("paddock-bench/tiny-llama", build_tiny_llama(CACHE / "tiny-llama"))]
    if not args.skip_smollm2:
        models.append(("HuggingFaceTB/SmolLM2-135M-Instruct", prepare_smollm2(CACHE)))
    with tempfile.TemporaryDirectory(prefix="paddock-bench-") as tmp, S3Server() as s3:
        s3.create_bucket("bench")
        reports = {repo: run_one(repo, d, args.store, s3, Path(tmp)) for repo, d in models}

    table = Table(title=f"submission pipeline, seconds per stage (store: {args.store})")
    table.add_column("stage")
    for repo in reports:
        table.add_column(repo.split("/")[-1], justify="right")
    for stage in STAGES:
        row = []
        for report in reports.values():
            found = next((s for s in report.get("stages", []) if s["name"] == stage), None)
            row.append(f"{found['seconds']:.1f}" if found else "—")
        table.add_row(stage, *row)
    table.add_row(
        "pipeline (timeline)", *[f"{r.get('total_seconds', 0):.1f}" for r in reports.values()]
    )
    table.add_row(
        "submit → deployed (wall, incl. Prefect start)",
        *[f"{r['wall_seconds']:.1f}" for r in reports.values()],
    )
    table.add_row("status", *[str(r.get("status")) for r in reports.values()])
    table.add_row("model.tensors MB", *[f"{_tensors_bytes(r) / 1e6:.1f}" for r in reports.values()])
    Console().print(table)


if __name__ == "__main__":
    main()
