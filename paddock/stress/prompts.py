"""What the load generator sends: chat conversations, as OpenAI-style message lists.

Three sources, one shape (``list[Message]`` per request):

- the shipped set (``data/conversations.json``): ~30 role-play and assistant chats with
  persona system prompts, several turns and varied lengths — the traffic a beta chat app
  sends, so prefill lengths and chat templates are exercised the way users will;
- `from_database`: real conversations users agreed to share (the chat side's
  `consented_prompts` reads them, already scrubbed and without user ids), so the load is
  the traffic the beta really sends once it has some;
- `random_token_prompts`: prompts of an exact token length, built like vLLM's random
  dataset, so a run can be compared with ``vllm bench serve --dataset-name random``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Protocol, TypedDict

import numpy as np

__all__ = [
    "Message",
    "Conversation",
    "load_conversations",
    "from_database",
    "random_token_prompts",
    "TokenizerLike",
]


class Message(TypedDict):
    role: str
    content: str


Conversation = list[Message]

_ROLES = {"system", "user", "assistant"}


def _check(conv: Sequence[Mapping[str, str]], where: str) -> Conversation:
    if not conv:
        raise ValueError(f"{where}: empty conversation")
    for m in conv:
        if m.get("role") not in _ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"{where}: bad message {m!r}")
    if conv[-1]["role"] != "user":
        raise ValueError(f"{where}: a request must end with a user turn")
    return [Message(role=m["role"], content=m["content"]) for m in conv]


@cache
def _shipped() -> tuple[tuple[tuple[str, str], ...], ...]:
    raw = resources.files("paddock.stress").joinpath("data/conversations.json").read_text("utf-8")
    convs = json.loads(raw)["conversations"]
    return tuple(
        tuple((m["role"], m["content"]) for m in _check(c["messages"], c["id"])) for c in convs
    )


def load_conversations() -> list[Conversation]:
    """The shipped conversations (fresh lists each call: callers may mutate them)."""
    return [[Message(role=r, content=c) for r, c in conv] for conv in _shipped()]


def from_database(
    conversations: Iterable[Sequence[Mapping[str, str]]], *, limit: int | None = None
) -> list[Conversation]:
    """Turn stored (anonymized) conversations into requests.

    Each conversation is cut after its last user turn, since a request asks the model for
    the next bot reply; conversations without a user turn are skipped. Rows come as plain
    role/content mappings (`paddock.conversations.consented_prompts`) and leave as
    checked `Message` lists.
    """
    out: list[Conversation] = []
    for i, conv in enumerate(conversations):
        msgs = list(conv)
        last_user = max((j for j, m in enumerate(msgs) if m.get("role") == "user"), default=-1)
        if last_user < 0:
            continue
        out.append(_check(msgs[: last_user + 1], f"conversation {i}"))
        if limit is not None and len(out) >= limit:
            break
    return out


class TokenizerLike(Protocol):
    """The slice of a Hugging Face tokenizer that random prompts need."""

    vocab_size: int

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


def random_token_prompts(
    tokenizer: TokenizerLike, *, num: int, input_len: int, seed: int = 0
) -> list[Conversation]:
    """``num`` single-user-turn prompts of ``input_len`` tokens, as vLLM's random dataset
    builds them (consecutive ids from a random offset, decoded, re-encoded and trimmed to
    length), so both tools prefill the same amount."""
    rng = np.random.default_rng(seed)
    vocab = int(tokenizer.vocab_size)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    allowed = np.array([i for i in range(vocab) if i not in special])
    offsets = rng.integers(0, len(allowed), size=num)
    out: list[Conversation] = []
    for i in range(num):
        ids = allowed[(offsets[i] + i + np.arange(input_len)) % len(allowed)].tolist()
        for _ in range(10):
            text = tokenizer.decode(ids)
            ids = tokenizer.encode(text, add_special_tokens=False)
            if len(ids) == input_len:
                break
            if len(ids) > input_len:
                ids = ids[:input_len]
            else:
                extra = allowed[rng.integers(0, len(allowed), size=input_len - len(ids))]
                ids = ids + extra.tolist()
        out.append([Message(role="user", content=tokenizer.decode(ids))])
    return out
