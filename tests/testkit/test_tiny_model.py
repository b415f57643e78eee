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


# -- the hostile kinds (tests/hardening serves them to the pipeline) -----------------------


def test_variant_inf_weights(variants: dict[str, Path]) -> None:
    tensors = load_file(variants["inf_weights"] / "model.safetensors")
    bad = {k: int(torch.isinf(t).sum()) for k, t in tensors.items() if torch.isinf(t).any()}
    assert bad == {"model.layers.0.mlp.down_proj.weight": 1}


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("pickle_beside_safetensors", "pytorch_model.bin"),
        ("pickle_pt", "model.pt"),
        ("pickle_pkl", "weights.pkl"),
    ],
)
def test_variant_pickle_beside_safetensors(variants: dict[str, Path], kind: str, name: str) -> None:
    d = variants[kind]
    assert (d / "model.safetensors").is_file()
    assert "lm_head.weight" in torch.load(d / name, weights_only=True)


def test_variant_pickle_payload_would_run_code(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The payload is real: an unrestricted torch.load (in a child process) runs it; the
    restricted one refuses it without running it."""
    import subprocess
    import sys

    from paddock.testkit.tiny_model import payload_marker

    d = make_variant(tiny_model_dir, tmp_path / "payload", "pickle_payload_only")
    marker = payload_marker(d)
    assert not list(d.glob("*.safetensors")) and not marker.exists()
    with pytest.raises(Exception, match="exec"):
        torch.load(d / "pytorch_model.bin", weights_only=True)
    assert not marker.exists()

    load = f"import torch; torch.load({str(d / 'pytorch_model.bin')!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", load], check=True, capture_output=True)
    assert marker.read_text() == "unpickled"
    assert payload_marker(make_variant(tiny_model_dir, d, "pickle_payload")) == marker
    assert not marker.exists(), "making the variant again clears the marker"


def test_variant_custom_code_without_a_python_file(variants: dict[str, Path]) -> None:
    auto_map = json.loads((variants["auto_map_only"] / "config.json").read_text())["auto_map"]
    assert "--" in auto_map["AutoModelForCausalLM"]  # another repository's code
    remote = json.loads((variants["trust_remote_code"] / "config.json").read_text())
    assert remote["trust_remote_code"] is True
    for kind in ("auto_map_only", "trust_remote_code"):
        assert not list(variants[kind].glob("*.py"))


def test_variant_tensors_against_config(variants: dict[str, Path]) -> None:
    missing = load_file(variants["missing_tensor"] / "model.safetensors")
    assert "model.layers.1.self_attn.k_proj.weight" not in missing
    assert "model.layers.0.self_attn.k_proj.weight" in missing
    mismatched = load_file(variants["shape_mismatch"] / "model.safetensors")
    assert tuple(mismatched["model.layers.0.mlp.up_proj.weight"].shape) == (128, 256)
    extra = json.loads((variants["extra_layers"] / "config.json").read_text())
    assert extra["num_hidden_layers"] == 1
    assert "model.layers.1.mlp.up_proj.weight" in load_file(
        variants["extra_layers"] / "model.safetensors"
    )


@pytest.mark.parametrize(
    "kind",
    [
        "truncated_safetensors",
        "corrupted_safetensors",
        "offsets_beyond_file",
        "overlapping_offsets",
    ],
)
def test_variant_broken_safetensors_are_refused_by_the_library_too(
    variants: dict[str, Path], tiny_model_dir: Path, kind: str
) -> None:
    """paddock's header checks agree with the safetensors library on every one."""
    from safetensors import SafetensorError

    with pytest.raises((SafetensorError, ValueError, OSError)):
        load_file(variants[kind] / "model.safetensors")
    good = (tiny_model_dir / "model.safetensors").stat().st_size
    size = (variants[kind] / "model.safetensors").stat().st_size
    assert size < good if kind == "truncated_safetensors" else abs(size - good) < 64


def test_variant_config_values(variants: dict[str, Path]) -> None:
    bad = json.loads((variants["config_bad_values"] / "config.json").read_text())
    assert bad["num_hidden_layers"] == 1_000_000_000
    short = json.loads((variants["short_context"] / "config.json").read_text())
    assert short["max_position_embeddings"] == 256


def test_variant_broken_tokenizers(variants: dict[str, Path]) -> None:
    from tokenizers import Tokenizer

    with pytest.raises(json.JSONDecodeError):
        json.loads((variants["tokenizer_not_json"] / "tokenizer.json").read_text())
    json.loads((variants["tokenizer_unloadable"] / "tokenizer.json").read_text())
    with pytest.raises(Exception, match="variant"):
        Tokenizer.from_file(str(variants["tokenizer_unloadable"] / "tokenizer.json"))


def _templates(d: Path) -> set[str | None]:
    inline = json.loads((d / "tokenizer_config.json").read_text()).get("chat_template")
    jinja = d / "chat_template.jinja"
    return {inline, jinja.read_text() if jinja.exists() else None}


def test_variant_chat_templates(variants: dict[str, Path]) -> None:
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    assert _templates(variants["no_chat_template"]) == {None}
    env = ImmutableSandboxedEnvironment()
    (syntax,) = _templates(variants["template_syntax_error"])
    with pytest.raises(jinja2.TemplateSyntaxError):
        env.from_string(syntax)
    (raises,) = _templates(variants["template_raises"])
    env.globals["raise_exception"] = lambda m: (_ for _ in ()).throw(jinja2.TemplateError(m))
    with pytest.raises(jinja2.TemplateError, match="system message"):
        env.from_string(raises).render(messages=[{"role": "user", "content": "Hi"}])
    # the runaway ones are only inspected, never rendered here
    (forever,) = _templates(variants["template_forever"])
    assert forever.count("range(100000)") == 3
    (huge,) = _templates(variants["template_huge_output"])
    assert "range(100000)" in huge and "* 100" in huge


def test_variant_links_and_special_files(variants: dict[str, Path]) -> None:
    import stat

    from paddock.testkit.tiny_model import outside_path

    link = variants["symlink_file_outside"] / "tokenizer.json"
    assert link.is_symlink()
    assert link.resolve() == outside_path(variants["symlink_file_outside"]) / "tokenizer.json"
    folder = variants["symlink_dir_outside"] / "extra"
    assert folder.is_symlink() and (folder / "notes.txt").is_file()
    assert stat.S_ISFIFO((variants["fifo_file"] / "generation_config.json").lstat().st_mode)
