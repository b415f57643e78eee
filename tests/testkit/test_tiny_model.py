"""The tiny Llama builds offline, loads with transformers, generates; variants are
broken in exactly the intended way."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from paddock.testkit.tiny_model import (
    BUILD_MARKER,
    CHAT_TEMPLATE,
    VARIANT_KINDS,
    build_tiny_llama,
    make_variant,
)


def test_layout_and_config(tiny_model_dir: Path) -> None:
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "README.md",
    } <= names
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["hidden_size"] // config["num_attention_heads"] == 64
    assert config["head_dim"] == 64
    assert config["tie_word_embeddings"] is False
    assert config["torch_dtype"] == "float32"
    assert 500 <= config["vocab_size"] <= 1100
    tok_cfg = json.loads((tiny_model_dir / "tokenizer_config.json").read_text())
    assert tok_cfg["chat_template"] == CHAT_TEMPLATE
    assert (tiny_model_dir / "chat_template.jinja").read_text() == CHAT_TEMPLATE
    tensors = load_file(tiny_model_dir / "model.safetensors")
    assert "lm_head.weight" in tensors
    assert all(t.dtype == torch.float32 for t in tensors.values())


def test_loads_and_generates_greedily(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    assert len(tok) == model.config.vocab_size
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<pad>")
    text = "The capital of France is Paris."
    assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text

    inputs = tok.apply_chat_template(
        [{"role": "user", "content": "Hello there"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    prompt = tok.decode(inputs["input_ids"][0])
    assert prompt == "<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n"
    with torch.no_grad():
        out1 = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        out2 = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert out1.shape[1] > inputs["input_ids"].shape[1]
    assert torch.equal(out1, out2)  # greedy is deterministic


def test_cached_rebuild_is_instant_and_seed_changes_weights(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    mtime = (tiny_model_dir / "model.safetensors").stat().st_mtime_ns
    t0 = time.monotonic()
    assert build_tiny_llama(tiny_model_dir) == tiny_model_dir
    assert time.monotonic() - t0 < 0.5
    assert (tiny_model_dir / "model.safetensors").stat().st_mtime_ns == mtime

    other = build_tiny_llama(tmp_path / "seed1", seed=1)
    a = load_file(tiny_model_dir / "model.safetensors")
    b = load_file(other / "model.safetensors")
    assert a.keys() == b.keys()
    assert not torch.equal(a["lm_head.weight"], b["lm_head.weight"])


def test_incomplete_build_is_rebuilt(tiny_model_dir: Path, tmp_path: Path) -> None:
    dest = build_tiny_llama(tmp_path / "m")
    (dest / "model.safetensors").unlink()
    build_tiny_llama(dest)
    assert (dest / "model.safetensors").is_file()
    assert (dest / BUILD_MARKER).is_file()


@pytest.fixture(scope="module")
def variants(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("variants")
    return {kind: make_variant(tiny_model_dir, root / kind, kind) for kind in VARIANT_KINDS}


def test_unknown_variant_kind(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown variant"):
        make_variant(tiny_model_dir, tmp_path / "x", "nope")


def test_variant_nan_weights(variants: dict[str, Path]) -> None:
    tensors = load_file(variants["nan_weights"] / "model.safetensors")
    nan_tensors = [k for k, t in tensors.items() if torch.isnan(t).any()]
    assert nan_tensors == ["model.layers.0.mlp.down_proj.weight"]
    assert int(torch.isnan(tensors[nan_tensors[0]]).sum()) == 1


def test_variant_pickle_only(variants: dict[str, Path]) -> None:
    d = variants["pickle_only"]
    assert not list(d.glob("*.safetensors"))
    state = torch.load(d / "pytorch_model.bin", weights_only=True)
    assert "lm_head.weight" in state


def test_variant_custom_code(variants: dict[str, Path]) -> None:
    d = variants["custom_code"]
    config = json.loads((d / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_custom.CustomForCausalLM"
    assert (d / "modeling_custom.py").is_file()
    assert (d / "model.safetensors").is_file()


def test_variant_unsupported_arch(variants: dict[str, Path]) -> None:
    from transformers import AutoConfig

    config = json.loads((variants["unsupported_arch"] / "config.json").read_text())
    assert config["architectures"] == ["FooForCausalLM"]
    assert config["model_type"] == "foo"
    with pytest.raises((ValueError, KeyError)):
        AutoConfig.from_pretrained(variants["unsupported_arch"])


def test_variant_broken_config(variants: dict[str, Path]) -> None:
    with pytest.raises(json.JSONDecodeError):
        json.loads((variants["broken_config"] / "config.json").read_text())


def test_variant_no_tokenizer(variants: dict[str, Path]) -> None:
    d = variants["no_tokenizer"]
    names = {p.name for p in d.iterdir()}
    assert not names & {
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "special_tokens_map.json",
    }
    assert {"config.json", "model.safetensors"} <= names


def test_variant_no_safetensors(variants: dict[str, Path]) -> None:
    assert {p.name for p in variants["no_safetensors"].iterdir()} == {"README.md", "config.json"}


def test_variants_do_not_touch_source(tiny_model_dir: Path, variants: dict[str, Path]) -> None:
    tensors = load_file(tiny_model_dir / "model.safetensors")
    assert not any(math.isnan(float(t.float().sum())) for t in tensors.values())
    json.loads((tiny_model_dir / "config.json").read_text())
