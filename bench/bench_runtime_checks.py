"""The runtime checks' parts on a model big enough for its compute to show, for scaling.

SmolLM2's runtime checks are mostly fixed costs (imports, Python per token), so a straight
line through it and the tiny model says little about a 7B. This bench builds a Llama of
TinyLlama-1.1B's shape with random bfloat16 weights (SmolLM2's tokenizer and chat
template, so the prompts are the real ones) and times the same calls the runtime stage
makes, each on its own clock:

    load       AutoModelForCausalLM.from_pretrained(dir, dtype=float32)
    scan       paddock.checks.runtime.all_finite over every loaded parameter
    forward    one forward pass of three tokens
    reference  paddock.parity.reference_from_model: REFERENCE_PROMPTS, 8 greedy tokens

with torch on as many threads as the runtime stage gives it (half the cores). Each part is
then scaled to ``--scale-to`` bytes of bfloat16 weights (default 14,500 MB, a 7B) by the
ratio of weight bytes: loading, scanning and decoding all read every weight once per pass.

    .venv/bin/python bench/bench_runtime_checks.py [--repeat 2] [--threads N] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CACHE = Path(os.environ.get("PADDOCK_MODEL_CACHE", Path.home() / ".cache/paddock/models"))
# TinyLlama-1.1B's shape, with SmolLM2's vocabulary (its tokenizer and template come along).
SHAPE = {
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "max_position_embeddings": 2048,
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
PARTS = ("load", "scan", "forward", "reference")
MB = 1e6


def build(dest: Path, tokenizer_dir: Path) -> Path:
    """Random weights of the given shape, written tensor by tensor in bfloat16."""
    if (dest / "model.safetensors").is_file():
        return dest
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    work = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        shutil.copyfile(tokenizer_dir / name, work / name)
    tok = AutoTokenizer.from_pretrained(work)
    config = LlamaConfig(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        dtype="bfloat16",
        architectures=["LlamaForCausalLM"],
        **SHAPE,  # type: ignore[arg-type]
    )
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LlamaForCausalLM(config).state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    tensors = {
        name: torch.ones(shape, dtype=torch.bfloat16)
        if name.endswith("norm.weight")
        else (torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16)
        for name, shape in shapes.items()
    }
    save_file(tensors, str(work / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(work)
    shutil.rmtree(dest, ignore_errors=True)
    work.rename(dest)
    return dest


def one_round(model_dir: Path) -> dict[str, float]:
    import torch
    from transformers import AutoModelForCausalLM

    from paddock.checks.runtime import REFERENCE_PROMPTS, all_finite
    from paddock.parity import reference_from_model

    times: dict[str, float] = {}
    start = time.perf_counter()
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    times["load"] = time.perf_counter() - start
    start = time.perf_counter()
    assert all(all_finite(p) for p in model.parameters())
    times["scan"] = time.perf_counter() - start
    start = time.perf_counter()
    with torch.inference_mode():
        model(torch.tensor([[1, 2, 3]]))
    times["forward"] = time.perf_counter() - start
    start = time.perf_counter()
    reference_from_model(model_dir, REFERENCE_PROMPTS, 8, model=model)
    times["reference"] = time.perf_counter() - start
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=max(1, len(os.sched_getaffinity(0)) // 2))
    parser.add_argument("--scale-to", type=float, default=14_500, help="MB of bf16 weights")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from paddock.testkit.smollm2 import prepare_smollm2

    started = time.perf_counter()
    t0 = time.perf_counter()
    import torch
    import transformers.models.llama.modeling_llama  # noqa: F401
    from transformers.utils import logging as hf_logging

    imports_s = time.perf_counter() - t0
    hf_logging.disable_progress_bar()  # a bar per load would bury the rounds' lines
    model_dir = build(CACHE / "llama-1.1b-random", prepare_smollm2(CACHE))
    weight_mb = (model_dir / "model.safetensors").stat().st_size / MB
    print(
        f"model: {model_dir} ({weight_mb:,.0f} MB of bf16 weights); built or found in "
        f"{time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    torch.set_num_threads(args.threads)
    rounds = []
    for n in range(args.repeat):
        rounds.append(one_round(model_dir))
        print(
            f"round {n + 1}/{args.repeat}: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in rounds[-1].items()),
            file=sys.stderr,
        )
    scale = args.scale_to / weight_mb
    medians = {part: statistics.median(r[part] for r in rounds) for part in PARTS}
    print(
        f"\nruntime checks, {weight_mb:,.0f} MB model, torch on {args.threads} thread(s), "
        f"medians of {args.repeat}; scaled ×{scale:.2f} to {args.scale_to:,.0f} MB"
    )
    print(f"| part | seconds | s per GB of weights | at {args.scale_to:,.0f} MB |")
    print("|---|---:|---:|---:|")
    for part in PARTS:
        print(
            f"| {part} | {medians[part]:.2f} | {medians[part] / weight_mb * 1000:.2f} | "
            f"{medians[part] * scale:.0f} |"
        )
    total = sum(medians.values())
    print(f"| **sum** | {total:.2f} | {total / weight_mb * 1000:.2f} | **{total * scale:.0f}** |")
    print(f"(imports, a fixed cost paid once per flow process: {imports_s:.2f} s)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "weight_mb": weight_mb,
                    "threads": args.threads,
                    "rounds": rounds,
                    "medians": medians,
                    "imports_s": imports_s,
                    "scale": scale,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
