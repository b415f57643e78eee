"""`make demo`: the main job on a fresh machine, unattended.

A real model (SmolLM2-135M-Instruct) is prepared offline and published on a local hub
mirror, submitted with the `paddock` command, carried through every stage on embedded
defaults (SQLite, a local model store, a local vLLM process), asked a question, and its
timeline printed. With `--real-hub` the same path pulls from huggingface.co instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
REPO_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
QUESTION = "What is the capital of France?"
console = Console()


def _paddock(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paddock.cli", *args],
        env=env,
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
    )


@contextlib.contextmanager
def _hub(use_mirror: bool, cache: Path, home: Path) -> Iterator[str | None]:
    if not use_mirror:
        yield None
        return
    from paddock.testkit.hub import HubMirror
    from paddock.testkit.smollm2 import prepare_smollm2

    console.rule("[bold]1. Preparing SmolLM2-135M-Instruct offline (cached after the first run)")
    started = time.perf_counter()
    model_dir = prepare_smollm2(cache)
    console.print(f"model ready in {time.perf_counter() - started:.1f} s: {model_dir}")
    with HubMirror(home / "hub") as mirror:
        sha = mirror.add_model(REPO_ID, model_dir)
        console.print(f"local hub mirror {mirror.endpoint} serves {REPO_ID} @ {sha[:12]}")
        yield mirror.endpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave the model serving")
    parser.add_argument("--real-hub", action="store_true", help="pull from huggingface.co")
    parser.add_argument("--home", type=Path, default=ROOT / ".paddock" / "demo")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("PADDOCK_MODEL_CACHE", Path.home() / ".cache/paddock/models")),
    )
    args = parser.parse_args(argv)

    home: Path = args.home
    if home.exists():  # a fresh home each run: the demo shows a first submission
        import shutil

        shutil.rmtree(home)
    home.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PADDOCK_", "PREFECT_"))}
    env.update(PADDOCK_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")

    with _hub(not args.real_hub, args.cache, home) as endpoint:
        if endpoint:
            env["HF_ENDPOINT"] = endpoint
        console.rule(f"[bold]2. paddock submit {REPO_ID} --wait")
        submitted = _paddock(
            "submit", REPO_ID, "--name", "smollm2-demo", "--wait", "--json", env=env
        )
        report = json.loads(submitted.stdout or "{}")
        if submitted.returncode != 0 or report.get("status") != "deployed":
            console.print(f"[red]submission did not deploy:[/] {report.get('reason')}")
            console.print(f"flow log: {home / 'logs'}")
            return 1
        console.rule("[bold]3. A user asks the deployed model")
        answer = httpx.post(
            f"{report['endpoint']}/v1/chat/completions",
            json={
                "model": "smollm2-demo",
                "messages": [{"role": "user", "content": QUESTION}],
                "max_tokens": 48,
                "temperature": 0,
            },
            timeout=120,
        ).json()["choices"][0]["message"]["content"]
        console.print(f"[bold]user:[/] {QUESTION}\n[bold]smollm2-demo:[/] {answer.strip()}")
        console.rule("[bold]4. The timeline")
        subprocess.run(
            [sys.executable, "-m", "paddock.cli", "status", report["id"]], env=env, cwd=ROOT
        )
        if args.keep:
            console.print(
                f"still serving at {report['endpoint']} (PADDOCK_HOME={home}); "
                f"stop with: PADDOCK_HOME={home} paddock teardown {report['id']}"
            )
        else:
            _paddock("teardown", report["id"], env=env)
            console.print("model server stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
