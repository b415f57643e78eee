"""Sanity checks on a submitted model, before the platform spends money serving it.

Static checks read files as data (safe against hostile content: no code from the
submission is imported and no pickle is unpickled) and run first; runtime checks load the
weights with transformers, refuse non-finite values, and run a forward pass and a short
greedy generation whose tokens become the reference for the warm-up parity check. The
listing checks (``files.check_listing``) also run in the download stage, before anything
is fetched.

Modules: ``files`` (names, custom code, pickle files, links, sizes), ``config``,
``architectures`` (expected tensors), ``safetensors_headers``, ``pickles`` (opcode scan),
``tokenizer``, ``template`` (sandboxed rendering in a child process), ``static``,
``runtime``.
"""

from __future__ import annotations

from paddock.checks.architectures import SUPPORTED_ARCHITECTURES
from paddock.checks.runtime import REFERENCE_PROMPTS, runtime_checks
from paddock.checks.static import static_checks

__all__ = ["SUPPORTED_ARCHITECTURES", "REFERENCE_PROMPTS", "static_checks", "runtime_checks"]
