"""The serving plugin's eager log-prob ranks: the same ranks as vLLM's compiled kernel,
and nothing compiled for them.

Each case runs in the serving environment: the plugin registered as vLLM registers it,
then vLLM's sampler's rank function called as the sampler calls it (log-probs of a real
vocabulary size, the chosen ones taken by ``gather``, ties included).
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from deployments.local import DEFAULT_PYTHON

pytestmark = pytest.mark.skipif(
    not DEFAULT_PYTHON.exists(), reason=f"serving venv missing ({DEFAULT_PYTHON})"
)

SCRIPT = """
import json
import torch
from torch._dynamo.utils import counters

import paddock_serving
from vllm.v1.sample import sampler
from vllm.v1.sample.ops.logprobs import batched_count_greater_than as compiled

paddock_serving.register()
torch.manual_seed(0)
logits = torch.randn(4, 49152)
logits[1, :7] = logits[1, 100]  # ties with the chosen token of row 1 count as above it
logprobs = torch.log_softmax(logits, dim=-1)
chosen = logprobs.gather(-1, torch.tensor([[5], [100], [0], [49151]]))
with torch.inference_mode():
    ranks = sampler.batched_count_greater_than(logprobs, chosen)
    compiled_before = counters["frames"]["total"]
    expected = compiled(logprobs, chosen)
print(json.dumps({
    "eager": sampler.batched_count_greater_than is not compiled,
    "ranks": ranks.tolist(),
    "expected": expected.tolist(),
    "compiled_for_ranks": compiled_before,
}))
"""


def _run(eager: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PADDOCK_")}
    env["OMP_NUM_THREADS"] = "1"
    if eager:
        env["PADDOCK_VLLM_EAGER_RANKS"] = "1"
    done = subprocess.run(
        [str(DEFAULT_PYTHON), "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result: dict = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_eager_ranks_match_the_compiled_kernel_and_compile_nothing() -> None:
    found = _run(eager=True)
    assert found["eager"]
    assert found["ranks"] == found["expected"]
    assert found["ranks"][1] >= 8  # the tied tokens counted
    assert found["compiled_for_ranks"] == 0


def test_without_the_switch_vllm_compiles_its_kernel() -> None:
    """The control: what the switch saves the first log-prob request."""
    found = _run(eager=False)
    assert not found["eager"]
    assert found["ranks"] == found["expected"]
    assert found["compiled_for_ranks"] > 0
