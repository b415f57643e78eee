"""The request a model gets for a conversation: its format, its parameters, its history.

Two formats, chosen by the submission. With a `prompt_formatter` the developer wrote the
prompt layout (Chai's templates: memory, prompt, one template per side, a response prefix),
so the model gets a raw prompt on `/v1/completions`. Without one the model's own chat
template applies: `messages` on `/v1/chat/completions`, rendered by vLLM.

History is cut to `max_input_tokens` counted in the model's own tokens — a character
budget would overflow a model whose tokenizer splits finely and starve one that does not.
The oldest exchanges go first; the newest user message is never dropped (a message that
cannot fit by itself is refused). The count is made on the prompt exactly as the server
will see it (the formatted text, or the chat template rendered the way vLLM renders it),
with a binary search over how many exchanges to drop, so long histories cost a handful of
encodes.

When a model's bundle is not on this machine (a remote deployment whose work directory is
gone), the count falls back to UTF-8 bytes: byte-level tokenizers never make more tokens
than bytes, so the cut is too deep rather than too shallow, and the model never overflows.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from paddock.bundle import work_bundle_dir
from paddock.errors import Rejected
from paddock.models import Submission
from paddock.params import GenerationParams, PromptFormatter

__all__ = [
    "Turn",
    "ModelRequest",
    "TokenCounter",
    "TooLong",
    "counter_for",
    "build_request",
    "USER_NAME",
]

log = logging.getLogger(__name__)

USER_NAME = "User"
Role = Literal["system", "user", "assistant"]


class TooLong(Rejected):
    """The newest message (with the fixed parts of the prompt) exceeds the model's input."""


@dataclass(frozen=True, slots=True)
class Turn:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """What to POST to the model's server (relative ``path``) and how the history was cut."""

    path: Literal["/v1/chat/completions", "/v1/completions"]
    body: dict[str, Any]
    prompt_tokens: int
    dropped_turns: int
    exact: bool  # counted with the model's tokenizer (False: the byte-count fallback)


# --------------------------------------------------------------------------- token counting


class TokenCounter:
    """A model's tokenizer and chat template, or the byte-count fallback when absent."""

    def __init__(self, bundle: Path | None) -> None:
        self.tokenizer: Any = None
        self.template: Any = None
        self.specials: dict[str, str] = {}
        if bundle is None or not (bundle / "tokenizer.json").is_file():
            return
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(bundle / "tokenizer.json"))
        self.template, self.specials = _load_template(bundle)

    @property
    def exact(self) -> bool:
        return self.tokenizer is not None

    def count(self, text: str, *, special: bool) -> int:
        if self.tokenizer is None:
            return len(text.encode("utf-8")) + (1 if special else 0)
        return len(self.tokenizer.encode(text, add_special_tokens=special).ids)

    def render_chat(self, messages: list[dict[str, str]]) -> str | None:
        """The chat prompt as vLLM renders it, or None without a usable template."""
        if self.template is None:
            return None
        try:
            return str(
                self.template.render(messages=messages, add_generation_prompt=True, **self.specials)
            )
        except Exception as exc:  # a template this renderer cannot run: estimate instead
            log.warning("chat template failed to render (%s); estimating its length", exc)
            return None

    def count_chat(self, messages: list[dict[str, str]]) -> int:
        rendered = self.render_chat(messages)
        if rendered is not None:
            # The template writes the special tokens itself (vLLM adds none on top).
            return self.count(rendered, special=False)
        # No template: each message's text plus a few tokens of role markup.
        return sum(self.count(m["content"], special=False) + 4 for m in messages) + 3


def _load_template(bundle: Path) -> tuple[Any, dict[str, str]]:
    """The bundle's chat template, compiled as transformers compiles it (sandboxed)."""
    source: Any = None
    cfg: dict[str, Any] = {}
    cfg_path = bundle / "tokenizer_config.json"
    if cfg_path.is_file():
        try:
            cfg = json.loads(cfg_path.read_text())
        except ValueError:
            cfg = {}
    jinja_file = bundle / "chat_template.jinja"
    if jinja_file.is_file():
        source = jinja_file.read_text()
    else:
        source = cfg.get("chat_template")
        if isinstance(source, list):  # named templates: the default one
            named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
            source = named.get("default")
    specials: dict[str, str] = {}
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        value = cfg.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            specials[key] = value
    if not isinstance(source, str) or not source:
        return None, specials
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    env.filters["tojson"] = lambda v, indent=None: json.dumps(v, ensure_ascii=False, indent=indent)
    try:
        return env.from_string(source), specials
    except TemplateError as exc:
        log.warning("chat template of %s does not compile (%s); estimating instead", bundle, exc)
        return None, specials


@functools.lru_cache(maxsize=64)
def _cached_counter(bundle: Path) -> TokenCounter:
    return TokenCounter(bundle)


def counter_for(submission_id: str) -> TokenCounter:
    """The counter for a submission's bundle on this machine, loaded once per process."""
    bundle = work_bundle_dir(submission_id)
    if not (bundle / "tokenizer.json").is_file():
        return TokenCounter(None)  # not cached: the bundle may appear later
    return _cached_counter(bundle)


# --------------------------------------------------------------------------- formatting


class _Fields(dict[str, str]):
    """Template fields; a placeholder the template names but paddock does not fill stays."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _fill(template: str, **fields: str) -> str:
    return template.format_map(_Fields(fields))


def _raw_prompt(
    fmt: PromptFormatter, bot_name: str, memory: str, prompt: str, turns: Sequence[Turn]
) -> str:
    parts = [
        _fill(fmt.memory_template, bot_name=bot_name, memory=memory, user_name=USER_NAME),
        _fill(fmt.prompt_template, prompt=prompt, bot_name=bot_name, user_name=USER_NAME),
    ]
    for t in turns:
        if t.role == "user":
            parts.append(_fill(fmt.user_template, user_name=USER_NAME, message=t.content))
        else:
            parts.append(_fill(fmt.bot_template, bot_name=bot_name, message=t.content))
    parts.append(_fill(fmt.response_template, bot_name=bot_name, user_name=USER_NAME))
    return "".join(parts)


def _exchanges(turns: Sequence[Turn]) -> list[list[Turn]]:
    """Group turns into droppable units: each user message with the replies after it (a
    reply before any user message is a unit of its own), so a cut never leaves a
    conversation opening with an orphaned reply."""
    units: list[list[Turn]] = []
    for t in turns:
        if t.role == "user" or not units:
            units.append([t])
        else:
            units[-1].append(t)
    return units


_SAMPLING = ("temperature", "top_p", "top_k", "presence_penalty", "frequency_penalty")


def build_request(
    *,
    submission: Submission,
    model_name: str,
    turns: Sequence[Turn],
    counter: TokenCounter | None = None,
    overrides: Mapping[str, Any] | None = None,
    stream: bool = True,
) -> ModelRequest:
    """The request for the model's reply to ``turns`` (the newest one a user message).

    ``overrides`` (from an OpenAI-style request) may change the sampling values and the
    stop words, and may lower — never raise — the number of output tokens.
    """
    if not turns or turns[-1].role != "user":
        raise Rejected("a reply needs the user's message last in the history")
    params = GenerationParams.model_validate(submission.generation_params or {})
    counter = counter if counter is not None else counter_for(submission.id)
    limit = params.max_input_tokens
    system = [t for t in turns if t.role == "system"]
    units = _exchanges([t for t in turns if t.role != "system"])

    formatter = (
        PromptFormatter.model_validate(submission.prompt_formatter)
        if submission.prompt_formatter
        else None
    )
    memory = "\n".join(t.content for t in system)

    def render(kept: list[list[Turn]]) -> tuple[Any, int]:
        flat = [t for unit in kept for t in unit]
        if formatter is not None:
            text = _raw_prompt(formatter, submission.display_name, memory, "", flat)
            return text, counter.count(text, special=True)
        messages = [{"role": t.role, "content": t.content} for t in [*system, *flat]]
        return messages, counter.count_chat(messages)

    # Smallest number of leading exchanges to drop so the prompt fits (counts only shrink
    # as exchanges go), the last exchange — the newest user message — always kept.
    lo, hi = 0, len(units) - 1
    best: tuple[Any, int] | None = None
    best_drop = hi
    while lo <= hi:
        mid = (lo + hi) // 2
        rendered = render(units[mid:])
        if rendered[1] <= limit:
            best, best_drop = rendered, mid
            hi = mid - 1
        else:
            lo = mid + 1
    if best is None:
        _, n = render(units[-1:])
        raise TooLong(
            f"the message is too long for {submission.display_name}: its prompt would be {n} "
            f"tokens and the model reads at most {limit}; send a shorter message"
        )
    payload, n_tokens = best
    dropped = sum(len(u) for u in units[:best_drop])

    body: dict[str, Any] = {"model": model_name}
    if formatter is not None:
        body["prompt"] = payload
    else:
        body["messages"] = payload
    sampling = params.sampling()  # the developer's choices, as every paddock request
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key in _SAMPLING:
            sampling[key] = value
        elif key == "stop":
            sampling["stop"] = [value] if isinstance(value, str) else list(value)
        elif key == "max_tokens":
            sampling["max_tokens"] = min(sampling["max_tokens"], int(value))
        else:
            raise ValueError(f"not an override: {key}")
    body.update(sampling)
    body["stream"] = stream
    if stream:
        body["stream_options"] = {"include_usage": True}
    path: Literal["/v1/chat/completions", "/v1/completions"] = (
        "/v1/completions" if formatter is not None else "/v1/chat/completions"
    )
    return ModelRequest(path, body, n_tokens, dropped, counter.exact)
