"""Sort free-text feedback into a few categories developers can act on.

Feedback is short, informal and rarely uses the words a keyword list would expect
("broken record", "it loops"), so texts are compared by meaning: each is embedded with
WordLlama, a static-embedding model whose 16 MB of weights ship inside its wheel (no
download, no GPU, ~thousands of texts per second), and assigned to the category whose
labelled examples it is closest to on average (nearest centroid, cosine similarity).
Examples live in ``paddock/data/feedback_examples.json``; adding sentences there is how
the categories are taught.

Two refinements matter with a bag-of-tokens model. Every feedback sentence shares a
"this is a complaint about a bot" direction, so the mean of all examples is subtracted
before comparing, leaving what tells categories apart. And text that is close to no
category (centred similarity below `THRESHOLD`) is "other" rather than the least bad
guess. Text without a single word says nothing and is "other" too: counting it as a
complaint about short replies would mislead the developer reading the counts.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["CATEGORIES", "THRESHOLD", "categorize", "similarities"]

CATEGORIES = (
    "repetitive",
    "incoherent",
    "off_topic",  # off topic, or out of character
    "unsafe",
    "too_short",  # the replies were too short
    "praise",
    "other",
)
# Centred cosine similarity to the nearest category centroid below which a text is
# "other"; unrelated chatter ("what's the capital of France?") scores around 0.05-0.1.
THRESHOLD = 0.1

EXAMPLES = Path(__file__).parent / "data" / "feedback_examples.json"
_WORD = re.compile(r"[^\W\d_]{2,}")

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class _Index:
    mean: FloatArray  # mean embedding of every example
    centroids: FloatArray  # (categories, dim), centred and unit length
    labels: tuple[str, ...]


def categorize(texts: Sequence[str]) -> list[str]:
    """One category per text, in order; all texts are embedded in one batch."""
    out = ["other"] * len(texts)
    todo = [k for k, text in enumerate(texts) if _WORD.search(text)]
    if not todo:
        return out
    index = _index()
    sims = similarities([texts[k] for k in todo])
    best = sims.argmax(axis=1)
    for row, k in enumerate(todo):
        if sims[row, best[row]] >= THRESHOLD:
            out[k] = index.labels[best[row]]
    return out


def similarities(texts: Sequence[str]) -> FloatArray:
    """Centred cosine similarity of each text to each category centroid (columns in
    `_index().labels` order): the scores `categorize` decides on, for inspection."""
    index = _index()
    return np.asarray(_centred(_embed(texts), index.mean) @ index.centroids.T)


def _embed(texts: Sequence[str]) -> FloatArray:
    # The tokenizer needs valid UTF-8; a lone surrogate from a broken client would raise.
    clean = [text.encode("utf-8", "replace").decode("utf-8") for text in texts]
    return np.asarray(_model().embed(clean, norm=True), dtype=np.float32)


def _centred(vectors: FloatArray, mean: FloatArray) -> FloatArray:
    centred = vectors - mean
    norms = np.linalg.norm(centred, axis=-1, keepdims=True)
    return np.asarray(centred / np.maximum(norms, 1e-12), dtype=np.float32)


@functools.cache
def _model() -> Any:  # wordllama ships no type information
    import wordllama
    from wordllama import WordLlama

    # The weights are inside the package; load() alone would try the model hub first.
    return WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)


@functools.cache
def _index() -> _Index:
    examples: dict[str, list[str]] = json.loads(EXAMPLES.read_text(encoding="utf-8"))
    unknown = set(examples) - set(CATEGORIES)
    if unknown:
        raise ValueError(f"{EXAMPLES.name}: unknown categories {sorted(unknown)}")
    labels = tuple(c for c in CATEGORIES if examples.get(c))
    vectors = _embed([text for c in labels for text in examples[c]])
    mean = vectors.mean(axis=0)
    centred = _centred(vectors, mean)
    owner = np.array([c for c in labels for _ in examples[c]])
    centroids = np.stack([centred[owner == c].mean(axis=0) for c in labels])
    return _Index(mean, _centred(centroids, np.zeros_like(mean)), labels)
