"""The CPU tensorizer loader: vLLM's, plus the post-load weight processing it skips, and
a local bundle's tensors read as views of the mapped file (`paddock_serving.mapped`)."""

from __future__ import annotations

import time
from collections.abc import Generator

import torch
from torch import nn
from vllm.config import ModelConfig, VllmConfig
from vllm.logger import init_logger
from vllm.model_executor.model_loader.tensorizer_loader import TensorizerLoader
from vllm.model_executor.model_loader.utils import process_weights_after_loading

from paddock_serving.mapped import mapped_tensors

# Under "vllm." so vLLM's handler prints it: the start-up profile reads this line as the
# end of the weight load (deployments/startup.py).
logger = init_logger("vllm.paddock_serving")


def _already_processed(model: nn.Module) -> bool:
    # CPU linear methods attach ``cpu_linear`` in process_weights_after_loading; if a
    # future vLLM does that itself, do not process (e.g. repack) the weights twice.
    return any(hasattr(m, "cpu_linear") for m in model.modules())


class CPUTensorizerLoader(TensorizerLoader):
    """``--load-format tensorizer`` on CPU."""

    reader = "tensorizer"

    def _get_weights_iterator(self) -> Generator[tuple[str, torch.Tensor], None, None]:
        # A local file is mapped (one copy, page cache to parameter, as safetensors does);
        # a stream from S3 or HTTP goes through tensorizer's reader, as does any file
        # the mapping cannot read exactly.
        uri = self.tensorizer_config.tensorizer_uri
        mapped = mapped_tensors(uri) if uri and "://" not in uri else None
        if mapped is None:
            self.reader = "tensorizer"
            yield from super()._get_weights_iterator()
            return
        self.reader = "mapped"
        yield from mapped

    def load_model(
        self, vllm_config: VllmConfig, model_config: ModelConfig, prefix: str = ""
    ) -> nn.Module:
        started = time.perf_counter()
        model = super().load_model(vllm_config, model_config, prefix=prefix)
        loaded = time.perf_counter() - started
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        # Logged before the CPU processing, as vLLM's own loader logs "Loading weights
        # took": the start-up profile's weight-load part then means the same for both.
        logger.info(
            "paddock_serving: loaded %.0f MB of weights in %.2f s (%.0f MB/s, %s)",
            size / 1e6,
            loaded,
            size / 1e6 / max(loaded, 1e-9),
            self.reader,
        )
        if not _already_processed(model):
            started = time.perf_counter()
            load_device = vllm_config.load_config.device or vllm_config.device_config.device
            process_weights_after_loading(model, model_config, torch.device(load_device))
            logger.info(
                "paddock_serving: processed tensorizer-loaded weights for CPU in %.2f s",
                time.perf_counter() - started,
            )
        evaluated: nn.Module = model.eval()
        return evaluated
