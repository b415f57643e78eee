"""The CPU tensorizer loader: vLLM's, plus the post-load weight processing it skips."""

from __future__ import annotations

import torch
from torch import nn
from vllm.config import ModelConfig, VllmConfig
from vllm.logger import init_logger
from vllm.model_executor.model_loader.tensorizer_loader import TensorizerLoader
from vllm.model_executor.model_loader.utils import process_weights_after_loading

logger = init_logger(__name__)


def _already_processed(model: nn.Module) -> bool:
    # CPU linear methods attach ``cpu_linear`` in process_weights_after_loading; if a
    # future vLLM does that itself, do not process (e.g. repack) the weights twice.
    return any(hasattr(m, "cpu_linear") for m in model.modules())


class CPUTensorizerLoader(TensorizerLoader):
    """``--load-format tensorizer`` on CPU."""

    def load_model(
        self, vllm_config: VllmConfig, model_config: ModelConfig, prefix: str = ""
    ) -> nn.Module:
        model = super().load_model(vllm_config, model_config, prefix=prefix)
        if _already_processed(model):
            return model
        load_device = vllm_config.load_config.device or vllm_config.device_config.device
        process_weights_after_loading(model, model_config, torch.device(load_device))
        logger.info("paddock_serving: processed tensorizer-loaded weights for CPU")
        return model.eval()
