"""The real SmolLM2-135M-Instruct, converted offline from the PyPI GGUF, answers."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from paddock.testkit.smollm2 import prepare_smollm2

#: Shared across runs so the ~30 s conversion happens once per machine.
CACHE_DIR = Path(
    os.environ.get("PADDOCK_MODEL_CACHE", Path.home() / ".cache" / "paddock" / "models")
)


@pytest.mark.slow
def test_smollm2_answers_capital_of_france() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = prepare_smollm2(CACHE_DIR)
    t0 = time.monotonic()
    assert prepare_smollm2(CACHE_DIR) == model_dir  # cached
    assert time.monotonic() - t0 < 1.0

    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["torch_dtype"] == "float32"
    assert "quantization_config" not in config
    tok_cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in tok_cfg["chat_template"]
    assert (model_dir / "chat_template.jinja").is_file()

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    assert model.dtype == torch.float32
    inputs = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    answer = tok.decode(out[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer
