"""A bundle's tensors as views of the mapped file: the weight load safetensors gets.

vLLM loads a state-dict tensorizer file by deserializing every tensor into fresh memory and
then copying each into the model's parameters. On CPU the first step is most of the cost:
every fresh page is faulted in and zeroed by the kernel before the read lands in it, so
the bytes are touched three times where safetensors, which maps its file, touches them once
(page cache → parameter). A local ``model.tensors`` can be read the same way: tensorizer's
index gives each tensor's offset, dtype and shape, and a tensor over a private mapping of
the file at that offset is the tensor, read lazily from the page cache as the parameter
copy touches it.

Only what can be mapped exactly is: plain little-endian numeric tensors stored whole (no
encryption, no meta tensors), on CPUs that load unaligned words (tensorizer does not align
data offsets). Anything else returns None and the caller uses tensorizer's own reader.
"""

from __future__ import annotations

import mmap
import platform
from collections.abc import Iterator
from pathlib import Path

import torch

__all__ = ["mapped_tensors"]

_DTYPES = {
    "<f4": torch.float32,
    "<f2": torch.float16,
    "<f8": torch.float64,
    "<i8": torch.int64,
    "<i4": torch.int32,
    "<i2": torch.int16,
    "|i1": torch.int8,
    "|u1": torch.uint8,
    "|b1": torch.bool,
}
# Opaque dtypes tensorizer stores as raw bytes plus the torch dtype's name.
_OPAQUE = {"bfloat16": torch.bfloat16}
_UNALIGNED_OK = {"x86_64", "AMD64", "aarch64", "arm64"}


def _dtype(stored: str) -> torch.dtype | None:
    if stored in _DTYPES:
        return _DTYPES[stored]
    for name, dtype in _OPAQUE.items():
        if stored.endswith(name) and stored.startswith("<V"):
            return dtype
    return None


def mapped_tensors(path: str | Path) -> Iterator[tuple[str, torch.Tensor]] | None:
    """(name, tensor) for every tensor of a local tensorizer file, as views of a private
    mapping of it; None when the file is not one this can map exactly."""
    from tensorizer import TensorDeserializer

    path = Path(path)
    if platform.machine() not in _UNALIGNED_OK or not path.is_file():
        return None
    try:
        with TensorDeserializer(str(path), device="cpu", lazy_load=True) as index:
            entries = list(index._metadata.values())
    except Exception:
        return None  # an encrypted file, a newer format: tensorizer's reader decides
    plan: list[tuple[str, torch.dtype, tuple[int, ...], int, int]] = []
    for e in entries:
        name = e.name if isinstance(e.name, str) else e.name[0] if len(e.name) == 1 else None
        dtype = _dtype(str(e.dtype))
        if name is None or dtype is None or e.data_length != e.deserialized_length:
            return None
        itemsize = torch.empty((), dtype=dtype).element_size()
        count = e.data_length // itemsize
        if count * itemsize != e.data_length or count != _numel(e.shape):
            return None
        plan.append((name, dtype, tuple(e.shape), e.data_offset, count))
    return _views(path, plan)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _views(
    path: Path, plan: list[tuple[str, torch.dtype, tuple[int, ...], int, int]]
) -> Iterator[tuple[str, torch.Tensor]]:
    with open(path, "rb") as f:
        # Private and writable: copy-on-write, so no tensor can write back to the bundle,
        # and torch gets the writable buffer it wants.
        prot = mmap.PROT_READ | mmap.PROT_WRITE
        mm = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=prot)
    for name, dtype, shape, offset, count in plan:
        if count == 0:
            yield name, torch.empty(shape, dtype=dtype)
            continue
        flat = torch.frombuffer(mm, dtype=dtype, count=count, offset=offset)
        yield name, flat.view(shape)
