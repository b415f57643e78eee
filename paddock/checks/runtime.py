"""The sanity stage's runtime half: values, a load, a forward pass, the parity reference.

Only reached once the static checks passed, so the files are known to be well-formed
safetensors whose tensors match the config. Values are scanned tensor by tensor straight
from the files (a NaN is named, and found without building a model); the load then runs
with ``trust_remote_code=False`` and refuses any weight transformers had to invent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from paddock.errors import Rejected

__all__ = ["REFERENCE_PROMPTS", "all_finite", "check_finite", "runtime_checks"]

REFERENCE_PROMPTS = [
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "Hello! Who are you?",
]


def all_finite(tensor: Any) -> bool:
    """Whether every value is finite, in one reduction and without a copy.

    The smallest and largest values are both finite exactly when all values are: an
    infinity is an extreme itself, and ``aminmax`` propagates NaN. ``isfinite(t).all()``
    first writes a mask as large as the tensor, which made the scan five times slower.
    """
    import torch

    if not tensor.is_floating_point() or tensor.numel() == 0:
        return True
    if tensor.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        return bool(torch.isfinite(tensor).all())  # no aminmax for float8 on CPU
    low, high = torch.aminmax(tensor)
    return bool(torch.isfinite(low)) and bool(torch.isfinite(high))


def check_finite(model_dir: Path) -> None:
    """Refuse NaN or infinite values, reading one tensor at a time."""
    from safetensors import safe_open

    bad: list[str] = []
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as fh:
            for name in fh.keys():
                if not all_finite(fh.get_tensor(name)):
                    bad.append(name)
    if bad:
        raise Rejected(
            f"weights contain NaN or infinite values in {len(bad)} tensor(s), first "
            f"{', '.join(bad[:3])}; the model would produce garbage: check the training run "
            "and export a checkpoint whose values are all finite"
        )


def runtime_checks(
    model_dir: Path, *, max_new_tokens: int = 8, values_checked: bool = False
) -> dict[str, Any]:
    """Check values, load, run forward + greedy generation; returns the reference.

    ``values_checked``: the caller ran `check_finite` already (the sanity stage does, so
    that NaN weights are refused before anything is serialized); a second scan would read
    every tensor again for nothing.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from paddock.parity import reference_from_model

    if not values_checked:
        check_finite(model_dir)
    try:
        loaded: Any = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=torch.float32, trust_remote_code=False, output_loading_info=True
        )
        model, info = loaded
    except Exception as exc:
        raise Rejected(
            f"the model does not load with transformers ({str(exc)[:300]}); check that it "
            "loads with AutoModelForCausalLM.from_pretrained(dir) before submitting"
        ) from exc
    invented = sorted(info.get("missing_keys") or []) + sorted(info.get("mismatched_keys") or [])
    if invented:
        raise Rejected(
            f"transformers had to initialise {len(invented)} weight(s) at random "
            f"({', '.join(str(k) for k in invented[:3])}); push the complete checkpoint"
        )
    bad = [name for name, p in model.named_parameters() if not all_finite(p)]
    if bad:
        raise Rejected(
            f"weights contain NaN or infinite values in {len(bad)} tensor(s), first "
            f"{', '.join(bad[:3])}; the model would produce garbage"
        )
    with torch.inference_mode():
        out = model(torch.tensor([[1, 2, 3]]))
    if not torch.isfinite(out.logits).all():
        raise Rejected("a forward pass produced NaN or infinite logits; check the weights")
    return reference_from_model(model_dir, REFERENCE_PROMPTS, max_new_tokens, model=model)
