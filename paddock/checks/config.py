"""config.json and tokenizer_config.json as data: custom code, architecture, serving limits.

The serving limits (context length, dtype) come from here and nowhere else: a fixed
platform default the model cannot meet (a 2048-token context for a model trained on 256)
fails only once users arrive, so the model's own config sets them and the serving target
can only lower them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from paddock.checks.architectures import SUPPORTED_ARCHITECTURES
from paddock.checks.files import SIDE_FILE_LIMIT, human_bytes
from paddock.errors import Rejected

__all__ = [
    "DTYPES",
    "read_json",
    "read_config",
    "check_custom_code",
    "architecture",
    "context_length",
    "config_dtype",
    "serving_limits",
    "check_context",
]

# torch dtype names a served model may declare, as vLLM's --dtype spells them.
DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16", "half": "float16"}
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
# Above this the number is a typo or an attack on the checks' memory, not a real model.
_CONTEXT_MAX = 10_000_000


def read_json(path: Path, *, what: str | None = None) -> dict[str, Any]:
    """A JSON object from ``path``, size-checked before it is read."""
    name = what or path.name
    size = path.stat().st_size
    if size > SIDE_FILE_LIMIT:
        raise Rejected(
            f"{name} is {human_bytes(size)}; it must be under {human_bytes(SIDE_FILE_LIMIT)}"
        )
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise Rejected(
            f"{name} does not parse as JSON ({exc}); fix it or save it again with save_pretrained()"
        ) from exc
    if not isinstance(data, dict):
        raise Rejected(f"{name} must hold a JSON object; save it again with save_pretrained()")
    return data


def read_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    if not path.is_file():
        raise Rejected("config.json is missing; save the model with save_pretrained()")
    return read_json(path)


def check_custom_code(config: dict[str, Any], tokenizer_config: dict[str, Any]) -> None:
    """Refuse configs that only load by running the repository's (or another's) code."""
    for name, data in (("config.json", config), ("tokenizer_config.json", tokenizer_config)):
        if data.get("auto_map"):
            raise Rejected(
                f"{name} has an auto_map, so loading it would run custom code; paddock serves "
                "standard architectures only: remove auto_map (and any .py files) or ask an "
                "operator to allow custom code"
            )
        if data.get("trust_remote_code"):
            raise Rejected(
                f"{name} sets trust_remote_code; paddock never runs a submission's code: "
                "remove the key and use a standard architecture"
            )


def architecture(config: dict[str, Any]) -> str:
    archs = config.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    if arch not in SUPPORTED_ARCHITECTURES:
        raise Rejected(
            f"architecture {arch or '(none given)'} is not supported; set config.json's "
            f"architectures to one of: {', '.join(sorted(SUPPORTED_ARCHITECTURES))}"
        )
    return arch


def context_length(config: dict[str, Any]) -> int | None:
    """The longest sequence the model was built for, or None if its config does not say."""
    for key in _CONTEXT_KEYS:
        if key in config:
            value = config[key]
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not 0 < value <= _CONTEXT_MAX
            ):
                raise Rejected(
                    f"config.json's {key} must be a positive integer (got {value!r}); set it to "
                    "the context length the model was trained with"
                )
            return value
    return None


def config_dtype(config: dict[str, Any]) -> str | None:
    """The weights' declared dtype (transformers 4 writes torch_dtype, 5 writes dtype)."""
    value = config.get("torch_dtype", config.get("dtype"))
    if value is None:
        return None
    if not isinstance(value, str) or value.removeprefix("torch.") not in DTYPES:
        raise Rejected(
            f"config.json's torch_dtype {value!r} is not one paddock serves; use one of "
            f"{', '.join(sorted(set(DTYPES.values())))}"
        )
    return DTYPES[value.removeprefix("torch.")]


def serving_limits(config: dict[str, Any], *, cap: int, dtype: str) -> tuple[int, str]:
    """``(max_model_len, dtype)`` to serve with: the model's own context, lowered to the
    target's ``cap``; its declared dtype unless the target forces one (any value but
    ``auto``)."""
    context = context_length(config)
    max_len = min(context, cap) if context is not None else cap
    if dtype != "auto":
        return max_len, dtype
    return max_len, config_dtype(config) or "auto"


def check_context(
    config: dict[str, Any], *, cap: int, max_input_tokens: int, max_output_tokens: int
) -> None:
    """Refuse generation limits the served context cannot hold: the relay cuts prompts to
    ``max_input_tokens`` and asks for up to ``max_output_tokens``; more than the context
    is an error on every long conversation."""
    max_len, _ = serving_limits(config, cap=cap, dtype="float32")
    need = max_input_tokens + max_output_tokens
    if need <= max_len:
        return
    context = context_length(config)
    why = (
        f"config.json's max_position_embeddings is {context}"
        if context is not None and context <= cap
        else f"this platform serves at most {cap} tokens"
    )
    room = max_len - max_output_tokens
    fix = (
        f"submit with max_input_tokens={room} or less"
        if room > 0
        else f"lower max_output_tokens below {max_len}"
    )
    raise Rejected(
        f"the model's context holds {max_len} tokens ({why}), but max_input_tokens "
        f"{max_input_tokens} + max_output_tokens {max_output_tokens} = {need}: {fix}"
    )
