"""How much KV cache a model's server needs: enough for its own context, not a guess.

vLLM on CPU takes the KV cache size as a fixed number of bytes; sized from the model's
config for a few full-length sequences, it is neither too small for the model's context
nor gigabytes the machine has to zero at start-up.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["FIT_SEQS", "kv_cache_bytes"]

# Sequences the fitted KV cache holds at full context when max_num_seqs is not set.
FIT_SEQS = 4
_DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2}


def kv_cache_bytes(model_dir: Path, dtype: str, max_model_len: int, seqs: int) -> int:
    """KV-cache bytes for ``seqs`` sequences of ``max_model_len`` tokens of this model.

    Keys and values for every layer and KV head, one block of slack per sequence (vLLM
    allocates whole blocks), rounded up to a MiB.
    """
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg = cfg.get("text_config", cfg)
    heads = int(cfg["num_attention_heads"])
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads)
    if dtype == "auto":
        dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32")
    width = _DTYPE_BYTES.get(dtype.removeprefix("torch."), 4)
    per_token = 2 * int(cfg["num_hidden_layers"]) * kv_heads * head_dim * width
    tokens = seqs * (max_model_len + 128)
    mib = 1 << 20
    return -(-per_token * tokens // mib) * mib
