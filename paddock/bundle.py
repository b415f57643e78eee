"""Serialize a checked model into a self-contained tensorizer bundle.

The bundle is what vLLM loads with `--load-format tensorizer`: `model.tensors` (the state
dict, written with `write_state_dict` — not `write_module`, whose non-persistent buffers
vLLM rejects) beside the config, tokenizer and chat template, so the directory alone is
enough to serve. Tensors are read straight from the safetensors files: no model is built.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from paddock.config import get_settings
from paddock.contracts import Bundle
from paddock.errors import Rejected
from paddock.fsutil import replacing_dir

__all__ = ["SIDE_FILES", "load_state_dict", "work_bundle_dir", "write_bundle"]

# Small files copied beside the tensors (the serving engine reads them from --model).
SIDE_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)


def work_bundle_dir(submission_id: str) -> Path:
    """Where a submission's bundle is written on the machine that runs its flow (and where
    it stays: a local server may map it, the chat counts tokens with its tokenizer)."""
    return get_settings().work_dir / submission_id / "bundle"


def load_state_dict(model_dir: Path) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_file

    weights = sorted(model_dir.glob("*.safetensors"))
    state: dict[str, Any] = {}
    for path in weights:
        state.update(load_file(str(path)))
    if not weights:  # pickle weights, only when an operator allowed them
        for path in sorted(model_dir.glob("*.bin")):
            state.update(torch.load(path, map_location="cpu", weights_only=True))
    if not state:
        raise Rejected(f"no weights to serialize in {model_dir}")
    return state


def write_bundle(model_dir: Path, dest: Path, *, verify: bool = True) -> Bundle:
    """Write model.tensors + side files into `dest`; returns sizes and timings."""
    from tensorizer import TensorDeserializer, TensorSerializer

    with replacing_dir(dest) as tmp:
        started = time.perf_counter()
        state = load_state_dict(model_dir)
        loaded = time.perf_counter()
        serializer = TensorSerializer(str(tmp / "model.tensors"))
        serializer.write_state_dict(state)
        serializer.close()
        written = time.perf_counter()
        if verify:  # read back with hash verification: what we upload is what we checked
            deserializer = TensorDeserializer(
                str(tmp / "model.tensors"), verify_hash=True, device="cpu"
            )
            missing = set(state) - set(deserializer.keys())
            deserializer.close()
            if missing:
                raise RuntimeError(f"tensorizer round trip lost {len(missing)} tensors")
        for name in SIDE_FILES:
            if (model_dir / name).is_file():
                shutil.copyfile(model_dir / name, tmp / name)
    return Bundle(
        path=dest,
        tensors=len(state),
        bytes=(dest / "model.tensors").stat().st_size,
        read_s=round(loaded - started, 3),
        write_s=round(written - loaded, 3),
        verify_s=round(time.perf_counter() - written, 3),
    )
