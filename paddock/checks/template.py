"""The chat template exists and renders ordinary conversations, quickly and boundedly.

Users' conversations reach the model through its chat template, so a template that fails
to parse, raises on a plain exchange, drops the user's words, or never finishes would fail
every chat (or hang a server thread) after deployment. Each template is rendered in a
child process (``_render_worker.py``) under a sandboxed Jinja2 environment
(``ImmutableSandboxedEnvironment``), with an address-space and CPU limit set inside the
child and a wall-clock deadline enforced here by killing it; output is counted while it
streams and cut off past a bound.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from paddock.checks.config import read_json
from paddock.errors import Rejected

__all__ = ["RENDER_SECONDS", "find_templates", "check_chat_template"]

RENDER_SECONDS = 5.0  # wall clock for every template and conversation together
MEMORY_BYTES = 1 << 30
MAX_OUTPUT = 256 * 1024  # characters per conversation; a real one renders a few hundred
_WORKER = Path(__file__).with_name("_render_worker.py")
# Ordinary exchanges; a template may refuse a system message (Gemma's do) but not these.
CONVERSATIONS: list[dict[str, Any]] = [
    {"messages": [{"role": "user", "content": "Hello! Who are you?"}]},
    {
        "messages": [
            {"role": "user", "content": "Hi there."},
            {"role": "assistant", "content": "Hello! How can I help you today?"},
            {"role": "user", "content": "Tell me a short joke."},
        ]
    },
    {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        "optional": True,
    },
]
_FIX = {
    "syntax": "has a Jinja2 syntax error",
    "raised": "fails on an ordinary conversation",
    "drops_content": "leaves out the user's message",
    "too_long": "produces far too much text for a short conversation",
    "memory": "needs more memory than any template should",
}


def _token(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else ""


def find_templates(model_dir: Path, tokenizer_config: dict[str, Any]) -> dict[str, str]:
    """Every chat template the model ships, by where it was found."""
    found: dict[str, str] = {}
    inline = tokenizer_config.get("chat_template")
    if isinstance(inline, str):
        found["tokenizer_config.json"] = inline
    elif isinstance(inline, list):
        for item in inline:
            if isinstance(item, dict) and isinstance(item.get("template"), str):
                found[f"tokenizer_config.json ({item.get('name')})"] = item["template"]
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        try:
            found["chat_template.jinja"] = jinja.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Rejected("chat_template.jinja is not UTF-8 text; save it again") from exc
    as_json = model_dir / "chat_template.json"
    if as_json.is_file():
        value = read_json(as_json).get("chat_template")
        if isinstance(value, str):
            found["chat_template.json"] = value
    return found


def check_chat_template(
    model_dir: Path, tokenizer_config: dict[str, Any], *, seconds: float | None = None
) -> None:
    """Refuse a missing template, or one that does not render ordinary conversations."""
    templates = find_templates(model_dir, tokenizer_config)
    if not templates:
        raise Rejected(
            "no chat template: add `chat_template` to tokenizer_config.json or a "
            "chat_template.jinja file, so users' conversations can be formatted"
        )
    limit = RENDER_SECONDS if seconds is None else seconds
    request = {
        "templates": templates,
        "conversations": CONVERSATIONS,
        "context": {
            "bos_token": _token(tokenizer_config.get("bos_token")),
            "eos_token": _token(tokenizer_config.get("eos_token")),
        },
        "max_output": MAX_OUTPUT,
        "memory_bytes": MEMORY_BYTES,
        "cpu_seconds": int(limit) + 2,  # the wall clock should fire first
    }
    try:
        proc = subprocess.run(
            [sys.executable, "-I", str(_WORKER)],
            input=json.dumps(request).encode(),
            capture_output=True,
            timeout=limit,
            check=False,
            env={},  # nothing of the platform's environment (keys, tokens) reaches it
            cwd=tempfile.gettempdir(),
        )
    except subprocess.TimeoutExpired as exc:  # subprocess.run has killed the child
        raise Rejected(
            f"the chat template did not finish rendering ordinary conversations within "
            f"{limit:g} s (a loop that never ends?); simplify the template so it renders "
            "in milliseconds"
        ) from exc
    if proc.returncode < 0:  # killed by its own CPU or memory limit
        raise Rejected(
            "rendering the chat template exhausted its CPU or memory limit; simplify the "
            "template so it renders in milliseconds"
        )
    try:
        answer = json.loads(proc.stdout)
    except ValueError:
        raise RuntimeError(
            f"chat template renderer failed ({proc.returncode}): {proc.stderr.decode()[-500:]}"
        ) from None
    for where, problem in answer.items():
        if problem:
            raise Rejected(
                f"the chat template in {where} {_FIX.get(problem['kind'], 'fails')} "
                f"({problem['error']}); fix it and check it with "
                "tokenizer.apply_chat_template([{'role': 'user', 'content': 'Hi'}])"
            )
