"""The tokenizer loads, encodes, and its ids fit the model's embedding table.

``tokenizer.json`` is loaded with the ``tokenizers`` library (Rust, data only: no Python
from the repository runs). A tokenizer that produces an id at or above the config's
``vocab_size`` indexes past the embedding table and crashes the server on the first
prompt that contains the token, so that is checked here too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from paddock.checks.config import read_json
from paddock.errors import Rejected

__all__ = ["read_tokenizer_config", "check_tokenizer"]

_SAMPLE = "Hello! What is the capital of France? 1 2 3 ünïcödé 🙂"


def read_tokenizer_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "tokenizer_config.json"
    return read_json(path) if path.is_file() else {}


def check_tokenizer(model_dir: Path, config: dict[str, Any]) -> int | None:
    """Refuse a tokenizer that does not load or does not fit; returns its size if known."""
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        if (model_dir / "tokenizer.model").is_file():
            return None  # sentencepiece: parsed by the runtime checks' load
        raise Rejected(
            "no tokenizer: tokenizer.json (or tokenizer.model) is missing; save it with "
            "tokenizer.save_pretrained() into the model directory and push it"
        )
    from tokenizers import Tokenizer

    read_json(path)  # a clear message for a file that is not JSON at all
    try:
        tokenizer = Tokenizer.from_file(str(path))
        tokenizer.encode(_SAMPLE)
    except Exception as exc:
        raise Rejected(
            f"tokenizer.json does not load with the tokenizers library ({str(exc)[:200]}); "
            "save the tokenizer again with tokenizer.save_pretrained() and push tokenizer.json"
        ) from exc
    size = int(tokenizer.get_vocab_size(with_added_tokens=True))
    top = max(tokenizer.get_vocab(with_added_tokens=True).values(), default=-1)
    vocab = config.get("vocab_size")
    if isinstance(vocab, int) and not isinstance(vocab, bool) and top >= vocab:
        raise Rejected(
            f"the tokenizer produces ids up to {top} but config.json's vocab_size is {vocab}: "
            "those tokens would index past the embedding table; resize the embeddings "
            "(model.resize_token_embeddings(len(tokenizer))) and save the model again"
        )
    return size
