"""The founding test: a developer submits a model and, within minutes, reads her first
user feedback on it.

Black-box on real parts: a fresh paddock home, `paddock serve` as its own process, the
tiny model on the olah hub mirror, a vLLM server started by the pipeline, the chat API
over HTTP with streamed replies, the feedback flow, and the CLI pointed at the API with
the developer's key. Prints the time from submit to the first feedback she can read.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from paddock.testkit.ports import free_port
from tests.utils.vllm import needs_vllm

pytestmark = [pytest.mark.vllm, needs_vllm]
ROOT = Path(__file__).resolve().parents[1]
EMAIL, PHONE = "jane.doe@example.com", "+1 415 555 2671"
USER_ID = "app-user-4711"


def _run(args: list[str], env: dict[str, str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, **kw
    )


@pytest.fixture
def platform(tmp_path: Path, hub: Any) -> Iterator[tuple[str, dict[str, str]]]:
    """`paddock serve` on a fresh machine: only seeds in the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PADDOCK_", "PREFECT_"))}
    env.update(
        PADDOCK_HOME=str(tmp_path / "home"),
        HF_ENDPOINT=hub.endpoint,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "paddock.cli", "serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert server.poll() is None, (tmp_path / "serve.log").read_text()
        assert time.monotonic() < deadline, "paddock serve did not come up"
        time.sleep(0.2)
    try:
        yield url, env
    finally:
        server.terminate()
        server.wait(timeout=30)
        # Whatever happened above, no model server outlives the test.
        _run(["-c", _STOP_ALL], env, timeout=120)


_STOP_ALL = (
    "from paddock import crud\n"
    "from paddock.serving import stop_serving\n"
    "for sub in crud.list_submissions():\n"
    "    stop_serving(sub.id)\n"
)


def _stream(client: httpx.Client, path: str, body: dict[str, Any] | None = None) -> str:
    """POST and read the SSE reply to its end; returns the text, checks the final event."""
    text, done = [], None
    with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            assert "error" not in event, event
            if event.get("done"):
                done = event
            else:
                text.append(event["delta"])
    assert done is not None and done["message_id"] > 0 and done["ttft_ms"] >= 0
    return "".join(text)


def test_a_developer_reads_her_first_feedback_minutes_after_submitting(
    platform: tuple[str, dict[str, str]],
) -> None:
    url, env = platform
    created = _run(["-m", "paddock.cli", "developer", "create", "jane"], env)
    assert created.returncode == 0, created.stderr
    key = re.search(r"pdk_[A-Za-z0-9_\-]+", created.stdout + created.stderr)
    assert key, created.stdout + created.stderr
    dev = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key.group()}"})

    t0 = time.monotonic()
    response = dev.post("/submissions", json={"source": "paddock-test/tiny", "name": "tiny-jane"})
    assert response.status_code == 201, response.text
    sid = response.json()["id"]
    while (status := dev.get(f"/submissions/{sid}").json())["status"] != "deployed":
        assert status["status"] != "failed", status["reason"]
        assert time.monotonic() - t0 < 300, status
        time.sleep(1)
    deployed_s = time.monotonic() - t0

    user = httpx.Client(base_url=url, timeout=120)
    started = user.post(
        "/chat/conversations", json={"mode": "beta", "user_id": USER_ID, "consent": True}
    )
    assert started.status_code in (200, 201), started.text
    conversation = started.json()
    assert conversation["model"] == "tiny-jane"  # the router picked the new model
    assert "tiny-jane" in conversation["route"]["reason"]
    cid = conversation["conversation_id"]
    for text in ("Hello!", "Tell me about the sea.", "And the mountains?"):
        _stream(user, f"/chat/conversations/{cid}/messages", {"content": text})
    _stream(user, f"/chat/conversations/{cid}/regenerate")
    rated = user.post(
        f"/chat/conversations/{cid}/feedback",
        json={
            "thumbs_up": False,
            "text": f"It kept repeating itself. Write to me at {EMAIL} or call {PHONE}.",
        },
    )
    assert rated.status_code in (200, 201), rated.text

    flow = _run(["-m", "flows.feedback"], env, timeout=300)
    assert flow.returncode == 0, flow.stdout + flow.stderr

    cli_env = {**env, "PADDOCK_API_URL": url, "PADDOCK_API_KEY": key.group()}
    shown = _run(["-m", "paddock.cli", "feedback", sid, "--json"], cli_env)
    assert shown.returncode == 0, shown.stderr
    readable_s = time.monotonic() - t0
    report = json.loads(shown.stdout)
    assert report["ratings"] == 1 and report["thumbs_down"] == 1 and report["retries"] == 1
    item = report["items"][0]
    assert EMAIL not in shown.stdout and "555 2671" not in shown.stdout
    assert USER_ID not in shown.stdout
    assert "[email]" in item["text"] and "[phone]" in item["text"]
    assert item["category"]  # the feedback flow categorized it
    assert re.fullmatch(r"[0-9a-f]{64}", item["user"])  # the user, as a keyed hash only

    board = _run(["-m", "paddock.cli", "leaderboard", "--json"], cli_env)
    assert board.returncode == 0, board.stderr
    rows = json.loads(board.stdout)["rows"]
    assert [r["submission_id"] for r in rows] == [sid]

    print(
        f"\nsubmit → deployed {deployed_s:.1f} s; submit → first feedback readable by the "
        f"developer {readable_s:.1f} s"
    )
    assert dev.post(f"/submissions/{sid}/teardown").status_code == 200
