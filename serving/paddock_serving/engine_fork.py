"""On CPU, start vLLM's engine-core process by fork rather than spawn.

The API server builds its config, then starts the engine core in a second process. vLLM's
CPU platform forces ``spawn`` for that (``CpuPlatform.check_and_update_config`` sets
``VLLM_WORKER_MULTIPROC_METHOD=spawn`` unconditionally), so the engine core starts a
fresh interpreter and imports torch and vLLM a second time: about 7 s of a 19 s start
for SmolLM2-135M on two cores, with nothing to show for it. A fork inherits the imports.

Fork is what vLLM itself does on GPU while CUDA is not initialised, and it is safe here
for the same reason: at that point the API server has run no OpenMP parallel region and
holds no device state, so the child's thread pools start fresh. The local backend opts in
with ``PADDOCK_VLLM_ENGINE_FORK=1``; without it (the Kubernetes image, a GPU) nothing
changes.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["ENV", "fork_engine_core"]

ENV = "PADDOCK_VLLM_ENGINE_FORK"
_MARK = "_paddock_forks_engine"


def fork_engine_core() -> None:
    """Wrap the CPU platform's config hook so the start method it leaves is ``fork``."""
    if os.environ.get(ENV) != "1":
        return
    from vllm.platforms.cpu import CpuPlatform

    hook = CpuPlatform.__dict__["check_and_update_config"].__func__
    if getattr(hook, _MARK, False):
        return  # already wrapped in this process

    def check_and_update_config(cls: type[CpuPlatform], vllm_config: Any) -> None:
        hook(cls, vllm_config)
        os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = "fork"

    setattr(check_and_update_config, _MARK, True)
    CpuPlatform.check_and_update_config = classmethod(check_and_update_config)  # type: ignore[method-assign,assignment]
