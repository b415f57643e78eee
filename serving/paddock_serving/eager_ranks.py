"""On CPU, count log-prob ranks eagerly instead of compiling a kernel for it.

When a request asks for log-probs, vLLM's sampler reports each token's rank with
``batched_count_greater_than``, a ``torch.compile``d ``(x >= values).sum(-1)``. The
kernel is compiled on the server's first such request — for paddock that is warm-up's
parity check, on the way to `deployed` — and on two CPU cores that takes about 3 s:
importing dynamo and inductor, probing the CPU with the C compiler, building C++.

vLLM compiles it to avoid materialising a ``batch × vocabulary`` comparison on the GPU.
On CPU that tensor is small (256 × 152,000 booleans is 39 MB) and the two eager
operations take well under a millisecond, so the compile buys nothing there. The local
backend opts in with ``PADDOCK_VLLM_EAGER_RANKS=1``; without it nothing changes. The
result is the same tensor: the same comparison and sum, without dynamo's shape checks.
"""

from __future__ import annotations

import logging
import os

import torch

__all__ = ["ENV", "count_greater_or_equal", "eager_ranks"]

ENV = "PADDOCK_VLLM_EAGER_RANKS"
log = logging.getLogger("paddock_serving")


def count_greater_or_equal(x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Per row of ``x``, how many elements are ≥ that row's value: the chosen token's
    rank (1 for the most likely)."""
    return (x >= values).sum(-1)


def eager_ranks() -> None:
    """Point vLLM's sampler at the eager count (the sampler imported the compiled one by
    name, so that name is the one replaced)."""
    if os.environ.get(ENV) != "1":
        return
    from vllm.v1.sample import sampler

    if not hasattr(sampler, "batched_count_greater_than"):
        log.warning("vLLM's sampler has no batched_count_greater_than; ranks stay compiled")
        return
    sampler.batched_count_greater_than = count_greater_or_equal
