"""The bundle's read-back: the written file holds exactly the tensors that were checked."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from paddock import bundle
from paddock.bundle import load_state_dict, read_back, write_bundle
from paddock.testkit.tiny_model import build_tiny_llama


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("bundle")
    source = build_tiny_llama(root / "tiny")
    out = write_bundle(source, root / "bundle")
    return out.path / "model.tensors", load_state_dict(source)


def _flip_a_byte_of(path: Path, name: str, copy: Path) -> Path:
    """A copy of the file with one byte changed inside tensor ``name``'s data."""
    copy.write_bytes(path.read_bytes())
    index = bundle._index(copy)
    assert index is not None
    entry = dict(index)[name]
    fd = os.open(copy, os.O_RDWR)
    try:
        old = os.pread(fd, 1, entry.data_offset + entry.data_length // 2)
        os.pwrite(fd, bytes([old[0] ^ 0x01]), entry.data_offset + entry.data_length // 2)
    finally:
        os.close(fd)
    return copy


def test_the_written_file_reads_back_as_the_checked_tensors(
    written: tuple[Path, dict[str, Any]],
) -> None:
    path, state = written
    read_back(path, state)  # raises on any difference


def test_a_byte_changed_a_tensor_missing_or_another_shape_is_caught(
    written: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    path, state = written
    name = max(state, key=lambda n: state[n].numel())
    with pytest.raises(RuntimeError, match=f"{name} was not written as it was checked"):
        read_back(_flip_a_byte_of(path, name, tmp_path / "flipped.tensors"), state)
    with pytest.raises(RuntimeError, match="1 tensors missing and 0 extra"):
        read_back(path, {**state, "extra.weight": torch.zeros(2)})
    other = {**state, name: state[name].reshape(-1)}
    with pytest.raises(RuntimeError, match=f"{name} was written with another shape"):
        read_back(path, other)


def test_an_index_it_cannot_read_gets_tensorizers_verified_read(
    written: tuple[Path, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, state = written
    flipped = _flip_a_byte_of(path, next(iter(state)), tmp_path / "flipped.tensors")
    monkeypatch.setattr(bundle, "_index", lambda _path: None)
    read_back(path, state)
    with pytest.raises(Exception, match="failed CRC32 verification"):
        read_back(flipped, state)


def test_bytes_at_any_offset_compare_bit_for_bit() -> None:
    """A checked tensor mapped from its safetensors file may start at any byte: the
    comparison falls back to a width both sides align to, and still sees one flipped bit."""
    base = torch.arange(33, dtype=torch.uint8)
    want = base[1:]  # one byte in: no wider integer view of it
    got = want.clone()
    assert bundle._same_bits(got, want)
    got[5] ^= 1
    assert not bundle._same_bits(got, want)
    zeros = torch.zeros(4, dtype=torch.float32)
    negative = -zeros  # equal as floats, not as bits
    assert not bundle._same_bits(zeros.view(torch.uint8).clone(), negative.view(torch.uint8))
