"""The value scan: one bad value anywhere, in any dtype a checkpoint may hold, is found.

The scan reduces each tensor to its extremes instead of building a mask, so these cases
pin what that relies on: NaN propagates through the reduction wherever it sits
(vectorised heads and tails, a parallel split), and an infinity is an extreme.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from paddock.checks.runtime import all_finite, check_finite
from paddock.errors import Rejected

FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
BAD = [float("nan"), float("inf"), float("-inf")]


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("value", BAD, ids=["nan", "inf", "-inf"])
def test_one_bad_value_anywhere_is_found(dtype: torch.dtype, value: float) -> None:
    for size in (1, 2, 7, 31, 64, 65, 129, 4099):
        for at in sorted({0, 1 % size, size // 2, size - 2 if size > 1 else 0, size - 1}):
            tensor = torch.randn(size).to(dtype)
            tensor[at] = value
            assert not all_finite(tensor), (size, at)
    assert all_finite(torch.randn(4099).to(dtype))


def test_a_large_tensor_split_across_threads() -> None:
    """Past torch's grain size the reduction runs in chunks on several threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for at in (0, 3_000_001, 5_999_999):
            tensor = torch.randn(6_000_000)
            tensor[at] = float("nan")
            assert not all_finite(tensor), at
            assert not all_finite(tensor.view(2000, 3000).t()), at  # strided, not contiguous
    finally:
        torch.set_num_threads(before)


def test_integers_and_empty_tensors_have_nothing_to_scan() -> None:
    assert all_finite(torch.zeros(0))
    assert all_finite(torch.arange(10))
    assert all_finite(torch.zeros(3, 0, dtype=torch.bfloat16))


def test_check_finite_names_the_tensors(tmp_path: Path) -> None:
    good = torch.randn(8, 8, dtype=torch.bfloat16)
    bad = torch.randn(8, 8, dtype=torch.bfloat16)
    bad[7, 7] = float("inf")
    save_file(
        {"a.weight": good, "b.weight": bad, "c.ids": torch.arange(4)},
        tmp_path / "model.safetensors",
    )
    with pytest.raises(Rejected, match=r"in 1 tensor\(s\), first b\.weight"):
        check_finite(tmp_path)
    save_file({"a.weight": good}, tmp_path / "model.safetensors")
    check_finite(tmp_path)
