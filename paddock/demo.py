"""`make demo`: the main job on a fresh machine, unattended.

A real model (SmolLM2-135M-Instruct) is prepared offline and published on a local hub
mirror, submitted with the `paddock` command, carried through every stage on embedded
defaults (SQLite, a local model store, a local vLLM process) and its timeline printed.
Then the other half: `paddock serve` starts, a user's chat goes through paddock's router
and relay to the new model, the user rates it, the feedback flow runs, and the developer
reads her first feedback with her API key. With `--real-hub` the model comes from
huggingface.co instead.
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
from typing import Any

import httpx
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
REPO_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
QUESTION = "What is the capital of France?"
DEVELOPER = "demo-developer"
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
        key = _developer_key(env)
        started = time.monotonic()
        submitted = _paddock(
            "submit", REPO_ID, "--name", "smollm2-demo", "--developer", DEVELOPER,
            "--param", "temperature=0", "--wait", "--json", env=env,
        )  # fmt: skip
        report = json.loads(submitted.stdout or "{}")
        if submitted.returncode != 0 or report.get("status") != "deployed":
            console.print(f"[red]submission did not deploy:[/] {report.get('reason')}")
            console.print(f"flow log: {home / 'logs'}")
            return 1
        try:
            ok = _the_other_half(report, env, home, key, started)
        finally:
            if args.keep:
                console.print(
                    f"still serving at {report['endpoint']} (PADDOCK_HOME={home}); "
                    f"stop with: PADDOCK_HOME={home} paddock teardown {report['id']}"
                )
            else:
                _paddock("teardown", report["id"], env=env)
                console.print("model server stopped")
    return 0 if ok else 1


def _the_other_half(
    report: dict[str, Any], env: dict[str, str], home: Path, key: str, started: float
) -> bool:
    """The timeline, then a user's chat and rating through paddock, then the developer's
    read of it; False (with the reason shown) if a step fails."""
    console.rule("[bold]3. The timeline")
    subprocess.run([sys.executable, "-m", "paddock.cli", "status", report["id"]], env=env, cwd=ROOT)
    console.rule("[bold]4. A user chats with it through paddock, and rates it")
    with _serve(env, home) as api:
        _chat_and_rate(api)
        console.rule("[bold]5. The feedback flow, then the developer reads her feedback")
        flow = subprocess.run(
            [sys.executable, "-m", "flows.feedback"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if flow.returncode != 0:
            console.print(f"[red]the feedback flow failed:[/]\n{flow.stderr[-3000:]}")
            return False
        dev_env = {**env, "PADDOCK_API_URL": api, "PADDOCK_API_KEY": key}
        subprocess.run(
            [sys.executable, "-m", "paddock.cli", "feedback", report["id"]], env=dev_env, cwd=ROOT
        )
        console.print(f"submit → first feedback readable: {time.monotonic() - started:.1f} s")
    return True


@contextlib.contextmanager
def _serve(env: dict[str, str], home: Path) -> Iterator[str]:
    """`paddock serve` on a free port for the rest of the demo."""
    from paddock.testkit.ports import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (home / "serve.log").open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "paddock.cli", "serve", "--port", str(port)],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"paddock serve did not start; see {home / 'serve.log'}")
            time.sleep(0.2)
        console.print(f"paddock serve: {url} (chat page {url}/, dashboard {url}/dashboard)")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def _developer_key(env: dict[str, str]) -> str:
    created = _paddock("developer", "create", DEVELOPER, env=env)
    for word in (created.stdout or "").split():
        if word.startswith("pdk_"):
            return word
    raise RuntimeError("paddock developer create printed no key")


def _chat_and_rate(api: str) -> None:
    """What a chat app's backend does: start a beta conversation, stream a reply, rate."""
    with httpx.Client(base_url=api, timeout=120) as client:
        started = (
            client.post(
                "/chat/conversations",
                json={"mode": "beta", "user_id": "demo-user", "consent": True},
            )
            .raise_for_status()
            .json()
        )
        console.print(f"the router chose [bold]{started['model']}[/]")
        path = f"/chat/conversations/{started['conversation_id']}/messages"
        reply: list[str] = []
        with client.stream("POST", path, json={"content": QUESTION}) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    reply.append(event.get("delta", ""))
                    if "error" in event:
                        raise RuntimeError(event["error"])
        console.print(f"[bold]user:[/] {QUESTION}\n[bold]smollm2-demo:[/] {''.join(reply).strip()}")
        text = "Right answer, and clearly put. Write to me at demo.user@example.com"
        client.post(
            f"/chat/conversations/{started['conversation_id']}/feedback",
            json={"thumbs_up": True, "text": text},
        ).raise_for_status()
        console.print(f"the user rated it: thumbs up, {text!r}")


if __name__ == "__main__":
    raise SystemExit(main())
