"""Sanity checks on a downloaded model, before the platform spends money serving it.

Static checks read files only (fast, and safe against hostile content: no code from the
submission is imported and no pickle is unpickled). Runtime checks load the weights with
transformers, refuse non-finite values, and run a forward pass and a short greedy
generation whose tokens become the reference for the warm-up parity check.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

from paddock.contracts import Checked
from paddock.errors import Rejected

__all__ = ["SUPPORTED_ARCHITECTURES", "REFERENCE_PROMPTS", "static_checks", "runtime_checks"]

# Decoder architectures the serving engine (vLLM) runs and paddock has exercised or that
# share their loader; a new one is an operator decision, not a submitter's.
SUPPORTED_ARCHITECTURES = frozenset(
    {
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "MixtralForCausalLM",
        "Qwen2ForCausalLM",
        "Qwen3ForCausalLM",
        "GemmaForCausalLM",
        "Gemma2ForCausalLM",
        "Phi3ForCausalLM",
        "GPT2LMHeadModel",
        "GPTNeoXForCausalLM",
        "StableLmForCausalLM",
        "Starcoder2ForCausalLM",
        "OPTForCausalLM",
    }
)
REFERENCE_PROMPTS = [
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "Hello! Who are you?",
]
_PICKLE = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt")


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise Rejected("config.json is missing; save the model with save_pretrained()")
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise Rejected(f"config.json does not parse as JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise Rejected("config.json must hold a JSON object")
    return config


def _parameter_count(weights: list[Path]) -> int:
    from safetensors import safe_open

    total = 0
    for path in weights:
        try:
            with safe_open(str(path), framework="pt") as fh:
                for key in fh.keys():
                    n = 1
                    for dim in fh.get_slice(key).get_shape():
                        n *= dim
                    total += n
        except Exception as exc:
            raise Rejected(f"{path.name} is not a readable safetensors file: {exc}") from exc
    return total


def static_checks(
    model_dir: Path,
    all_files: list[str],
    *,
    allow_custom_code: bool,
    allow_pickle: bool,
    max_parameters: int,
) -> Checked:
    """Refuse what must never be served; returns facts for the timeline."""
    code = [f for f in all_files if f.endswith(".py")]
    config = _read_config(model_dir / "config.json")
    if not allow_custom_code and (code or "auto_map" in config):
        what = f"Python files ({', '.join(code[:5])})" if code else "an auto_map in config.json"
        raise Rejected(
            f"the repository contains custom code: {what}. paddock serves standard "
            "architectures only; remove the custom code or ask an operator to allow it"
        )
    weights = sorted(model_dir.glob("*.safetensors"))
    pickles = [f for f in all_files if any(fnmatch.fnmatch(f, p) for p in _PICKLE)]
    if not weights:
        if pickles and not allow_pickle:
            raise Rejected(
                f"only pickle weights were found ({', '.join(pickles[:3])}); pickle files can "
                "run code when loaded. Convert them with `model.save_pretrained(dir, "
                "safe_serialization=True)` and push the *.safetensors files"
            )
        if not pickles:
            raise Rejected("no weights found: the repository has no *.safetensors files")
    archs = config.get("architectures") or []
    if not archs or archs[0] not in SUPPORTED_ARCHITECTURES:
        raise Rejected(
            f"architecture {archs[0] if archs else '(none given)'} is not supported; "
            f"supported: {', '.join(sorted(SUPPORTED_ARCHITECTURES))}"
        )
    if not ((model_dir / "tokenizer.json").exists() or (model_dir / "tokenizer.model").exists()):
        raise Rejected("no tokenizer: tokenizer.json (or tokenizer.model) is missing")
    tok_config: dict[str, Any] = {}
    if (model_dir / "tokenizer_config.json").exists():
        try:
            tok_config = json.loads((model_dir / "tokenizer_config.json").read_text())
        except ValueError as exc:
            raise Rejected(f"tokenizer_config.json does not parse as JSON: {exc}") from exc
    if not (tok_config.get("chat_template") or (model_dir / "chat_template.jinja").exists()):
        raise Rejected(
            "no chat template: add `chat_template` to tokenizer_config.json or a "
            "chat_template.jinja file, so users' conversations can be formatted"
        )
    params = _parameter_count(weights)
    if params > max_parameters:
        raise Rejected(f"{params:,} parameters exceed the limit of {max_parameters:,}")
    return Checked(architecture=archs[0], parameters=params)


def runtime_checks(model_dir: Path, *, max_new_tokens: int = 8) -> dict[str, Any]:
    """Load, check finiteness, run forward + greedy generation; returns the reference."""
    import torch
    from transformers import AutoModelForCausalLM

    from paddock.parity import reference_from_model

    try:
        model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=torch.float32, trust_remote_code=False
        )
    except Exception as exc:
        raise Rejected(f"the model does not load with transformers: {exc}") from exc
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise Rejected(
            f"weights contain NaN or infinite values in {len(bad)} tensor(s), first "
            f"{', '.join(bad[:3])}; the model would produce garbage"
        )
    with torch.inference_mode():
        out = model(torch.tensor([[1, 2, 3]]))
    if not torch.isfinite(out.logits).all():
        raise Rejected("a forward pass produced NaN or infinite logits")
    del model
    return reference_from_model(model_dir, REFERENCE_PROMPTS, max_new_tokens)
