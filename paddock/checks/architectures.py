"""The architectures paddock serves, and the tensors a config says a checkpoint must hold.

A checkpoint that lacks a tensor its config describes still loads: transformers (and vLLM)
initialise the missing weights at random and the model answers gibberish, which surfaced
much later as a parity failure or not at all. Deriving the expected names and shapes from
the config lets the sanity stage compare them against the safetensors headers before
anything is loaded. Llama-family layouts are spelled out; other supported architectures get
the generic header checks and transformers' own loading report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from paddock.errors import Rejected

__all__ = ["SUPPORTED_ARCHITECTURES", "Expected", "expected_tensors"]

# Decoder architectures the serving engine (vLLM) runs and paddock has exercised or that
# share their loader; a new one is an operator decision, not a submitter's.
SUPPORTED_ARCHITECTURES = frozenset(
    {
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "MixtralForCausalLM",
        "Qwen2ForCausalLM",
        "Qwen3ForCausalLM",
        "GemmaForCausalLM",
        "Gemma2ForCausalLM",
        "Phi3ForCausalLM",
        "GPT2LMHeadModel",
        "GPTNeoXForCausalLM",
        "StableLmForCausalLM",
        "Starcoder2ForCausalLM",
        "OPTForCausalLM",
    }
)


@dataclass(frozen=True)
class _Layout:
    tied_by_default: bool = False
    qkv_bias: bool | None = None  # None: the config's attention_bias decides
    qk_norm: bool = False
    ffn_norms: bool = False


_LAYOUTS = {
    "LlamaForCausalLM": _Layout(),
    "MistralForCausalLM": _Layout(qkv_bias=False),
    "Qwen2ForCausalLM": _Layout(qkv_bias=True),
    "Qwen3ForCausalLM": _Layout(qk_norm=True),
    "GemmaForCausalLM": _Layout(tied_by_default=True, qkv_bias=False),
    "Gemma2ForCausalLM": _Layout(tied_by_default=True, qkv_bias=False, ffn_norms=True),
}

# Upper bounds far above any real model: past them a config is a typo or an attempt to make
# the checks themselves allocate without end.
_BOUNDS = {
    "vocab_size": 10_000_000,
    "hidden_size": 1_000_000,
    "intermediate_size": 10_000_000,
    "num_hidden_layers": 1024,
    "num_attention_heads": 4096,
    "num_key_value_heads": 4096,
    "head_dim": 65_536,
}


@dataclass(frozen=True)
class Expected:
    """Tensor names and shapes a checkpoint must hold (``required``) or may hold."""

    required: dict[str, tuple[int, ...]]
    optional: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # Buffers old exporters wrote that loaders skip.
    ignorable_suffixes: tuple[str, ...] = (".rotary_emb.inv_freq",)
    facts: str = ""


def _int(config: dict[str, Any], key: str, arch: str, default: int | None = None) -> int:
    value = config.get(key, default)
    if value is None:
        raise Rejected(
            f"config.json lacks {key}, which {arch} needs; save the config with save_pretrained()"
        )
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= _BOUNDS[key]:
        raise Rejected(
            f"config.json's {key} must be a positive integer of at most {_BOUNDS[key]:,} "
            f"(got {value!r}); fix config.json"
        )
    return value


def expected_tensors(config: dict[str, Any], arch: str) -> Expected | None:
    """What ``config`` says the checkpoint holds, for the layouts spelled out here."""
    layout = _LAYOUTS.get(arch)
    if layout is None:
        return None
    vocab = _int(config, "vocab_size", arch)
    hidden = _int(config, "hidden_size", arch)
    inter = _int(config, "intermediate_size", arch)
    layers = _int(config, "num_hidden_layers", arch)
    heads = _int(config, "num_attention_heads", arch)
    kv_heads = _int(config, "num_key_value_heads", arch, default=heads)
    if heads % kv_heads:
        raise Rejected(
            f"config.json's num_attention_heads ({heads}) is not a multiple of "
            f"num_key_value_heads ({kv_heads}); fix config.json"
        )
    if config.get("head_dim") is not None:
        head_dim = _int(config, "head_dim", arch)
    elif hidden % heads:
        raise Rejected(
            f"config.json's hidden_size ({hidden}) is not a multiple of num_attention_heads "
            f"({heads}) and no head_dim is given; fix config.json"
        )
    else:
        head_dim = hidden // heads
    tied = bool(config.get("tie_word_embeddings", layout.tied_by_default))
    qkv_bias = (
        layout.qkv_bias if layout.qkv_bias is not None else bool(config.get("attention_bias"))
    )
    o_bias = layout.qkv_bias is None and bool(config.get("attention_bias"))
    mlp_bias = bool(config.get("mlp_bias")) and layout.qkv_bias is None

    required: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (vocab, hidden),
        "model.norm.weight": (hidden,),
    }
    for i in range(layers):
        p = f"model.layers.{i}."
        required |= {
            p + "self_attn.q_proj.weight": (heads * head_dim, hidden),
            p + "self_attn.k_proj.weight": (kv_heads * head_dim, hidden),
            p + "self_attn.v_proj.weight": (kv_heads * head_dim, hidden),
            p + "self_attn.o_proj.weight": (hidden, heads * head_dim),
            p + "mlp.gate_proj.weight": (inter, hidden),
            p + "mlp.up_proj.weight": (inter, hidden),
            p + "mlp.down_proj.weight": (hidden, inter),
            p + "input_layernorm.weight": (hidden,),
            p + "post_attention_layernorm.weight": (hidden,),
        }
        if qkv_bias:
            required |= {
                p + "self_attn.q_proj.bias": (heads * head_dim,),
                p + "self_attn.k_proj.bias": (kv_heads * head_dim,),
                p + "self_attn.v_proj.bias": (kv_heads * head_dim,),
            }
        if o_bias:
            required[p + "self_attn.o_proj.bias"] = (hidden,)
        if mlp_bias:
            required |= {
                p + "mlp.gate_proj.bias": (inter,),
                p + "mlp.up_proj.bias": (inter,),
                p + "mlp.down_proj.bias": (hidden,),
            }
        if layout.qk_norm:
            required |= {
                p + "self_attn.q_norm.weight": (head_dim,),
                p + "self_attn.k_norm.weight": (head_dim,),
            }
        if layout.ffn_norms:
            required |= {
                p + "pre_feedforward_layernorm.weight": (hidden,),
                p + "post_feedforward_layernorm.weight": (hidden,),
            }
    optional: dict[str, tuple[int, ...]] = {}
    (optional if tied else required)["lm_head.weight"] = (vocab, hidden)
    facts = (
        f"vocab_size={vocab}, hidden_size={hidden}, intermediate_size={inter}, "
        f"num_hidden_layers={layers}, num_attention_heads={heads}, "
        f"num_key_value_heads={kv_heads}, head_dim={head_dim}, tie_word_embeddings={tied}"
    )
    return Expected(required=required, optional=optional, facts=facts)
