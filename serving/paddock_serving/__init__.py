"""paddock's vLLM plugin (entry point group ``vllm.general_plugins``).

vLLM calls :func:`register` in every process it starts (API server, engine core,
workers); it must be cheap and safe to call more than once.

What it fixes: vLLM's ``TensorizerLoader.load_model`` overrides
``BaseModelLoader.load_model`` and never calls
``model_loader.utils.process_weights_after_loading``. On GPU that step is a no-op for
unquantized models, but on CPU it is where linear layers get their ``cpu_linear``
kernel, so the first request fails with
``'QKVParallelLinear' object has no attribute 'cpu_linear'``. On CPU we register a
subclass of the tensorizer loader under the same load format (``tensorizer``) that runs
the missing step after the load. On any other platform the plugin does nothing.

Where the local backend asks for them, two start-up cuts on CPU: the engine-core process
forked rather than spawned (`paddock_serving.engine_fork`: one interpreter's imports
fewer), and log-prob ranks counted eagerly rather than by a kernel compiled on the first
request that asks for them (`paddock_serving.eager_ranks`: about 3 s off that request).
"""

from __future__ import annotations

import logging

__all__ = ["register", "__version__"]
__version__ = "0.1.0"

log = logging.getLogger("paddock_serving")


def register() -> None:
    """vLLM general-plugin entry point."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return  # GPU & co.: vLLM's own tensorizer loader is correct there.

    from vllm.model_executor import model_loader as ml

    from paddock_serving.cpu_tensorizer import CPUTensorizerLoader
    from paddock_serving.eager_ranks import eager_ranks
    from paddock_serving.engine_fork import fork_engine_core

    fork_engine_core()
    eager_ranks()

    if ml._LOAD_FORMAT_TO_MODEL_LOADER.get("tensorizer") is CPUTensorizerLoader:
        return  # already registered in this process
    ml.register_model_loader("tensorizer")(CPUTensorizerLoader)
