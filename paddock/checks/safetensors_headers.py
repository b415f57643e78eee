"""safetensors headers read by hand: structure, offsets, shapes against the config.

A safetensors file is an 8-byte little-endian header length, a JSON header naming each
tensor's dtype, shape and byte range, then the bytes. Everything that can be wrong with a
checkpoint short of its values is visible in the header: a truncated upload, a corrupted
file, offsets that point past the end or overlap, a tensor the config describes but the file
lacks, a shape that belongs to another model. Reading the header is a few kilobytes of I/O
and no trust in the file: it is parsed here, with every bound checked, before any loader
(whose errors are written for library authors, or who silently initialises what is
missing) sees the file.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paddock.checks.architectures import Expected
from paddock.errors import Rejected

__all__ = [
    "TensorInfo",
    "read_header",
    "read_checkpoint",
    "parameter_count",
    "check_against_config",
]

# The safetensors library refuses headers above 100 MB; so does paddock.
MAX_HEADER = 100_000_000
DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})
_RESAVE = "re-save the weights with `save_pretrained(dir, safe_serialization=True)`"


@dataclass(frozen=True)
class TensorInfo:
    file: str
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _listed(names: Sequence[str], limit: int = 3) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _entry(file: str, name: str, raw: object) -> TensorInfo:
    def bad(why: str) -> Rejected:
        return Rejected(
            f"{file} is corrupted: the header entry for tensor {name!r} {why}; {_RESAVE} "
            "and upload them again"
        )

    if not isinstance(raw, dict) or set(raw) != {"dtype", "shape", "data_offsets"}:
        raise bad("is not {dtype, shape, data_offsets}")
    dtype, shape, offsets = raw["dtype"], raw["shape"], raw["data_offsets"]
    if dtype not in DTYPE_BYTES:
        raise bad(f"has dtype {dtype!r}, which safetensors does not define")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise bad(f"has shape {shape!r}, not a list of non-negative integers")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise bad(f"has data_offsets {offsets!r}, not [begin, end] with begin <= end")
    info = TensorInfo(file, name, dtype, tuple(shape), offsets[0], offsets[1])
    need = info.numel * DTYPE_BYTES[dtype]
    if info.end - info.begin != need:
        raise Rejected(
            f"the header of {file} is wrong: tensor {name} spans {info.end - info.begin} bytes but "
            f"shape {list(shape)} in {dtype} needs {need}; {_RESAVE}"
        )
    return info


class _Repeated(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all distinct: Python keeps a repeated key's last value,
    safetensors' own parser need not, so a repeat is refused rather than guessed at."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _Repeated(key)
        found[key] = value
    return found


def read_header(path: Path) -> list[TensorInfo]:
    """The tensors ``path`` declares, with every offset checked against the file."""
    file = path.name
    size = path.stat().st_size
    with path.open("rb") as fh:
        prefix = fh.read(8)
        if len(prefix) < 8:
            raise Rejected(
                f"{file} is {size} bytes long, too short to be a safetensors file; upload it again"
            )
        (length,) = struct.unpack("<Q", prefix)
        if length == 0 or length > MAX_HEADER or 8 + length > size:
            raise Rejected(
                f"{file} is not a readable safetensors file: its first bytes announce a "
                f"{length}-byte header in a {size}-byte file, so it is corrupted or truncated; "
                "upload it again"
            )
        raw = fh.read(length)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_repeats)
    except _Repeated as exc:
        raise Rejected(
            f"{file} names tensor {exc.name} twice in its header, so one reader would load "
            f"one copy and another the other; {_RESAVE} and upload them again"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise Rejected(
            f"{file} is corrupted: its header is not JSON ({exc}); {_RESAVE} and upload them again"
        ) from exc
    if not isinstance(header, dict):
        raise Rejected(f"{file} is corrupted: its header is not a JSON object; {_RESAVE}")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise Rejected(f"{file} is corrupted: its __metadata__ is not a map of strings; {_RESAVE}")
    tensors = [_entry(file, name, raw_entry) for name, raw_entry in header.items()]
    data = size - 8 - length
    for t in tensors:
        if t.end > data:
            raise Rejected(
                f"{file} is truncated or its header lies: tensor {t.name}'s data ends at byte "
                f"{t.end} of the data section, which holds only {data} bytes; upload the file "
                "again (or re-save it with safetensors)"
            )
    ordered = sorted(tensors, key=lambda t: (t.begin, t.end))
    position = 0
    previous: TensorInfo | None = None
    for t in ordered:
        if t.begin < position and previous is not None:
            raise Rejected(
                f"the header of {file} lies: tensors {previous.name} and {t.name} claim "
                f"overlapping bytes ({previous.begin}-{previous.end} and {t.begin}-{t.end}); "
                f"{_RESAVE}"
            )
        if t.begin > position:
            raise Rejected(
                f"the header of {file} does not account for {t.begin - position} bytes before "
                f"tensor {t.name}; the file is corrupted: {_RESAVE}"
            )
        position, previous = t.end, t
    if position != data:
        raise Rejected(
            f"{file} has {data - position} bytes after its last tensor that its header does not "
            f"describe; the file is corrupted: {_RESAVE}"
        )
    return tensors


def read_checkpoint(model_dir: Path, weight_files: Iterable[Path]) -> dict[str, TensorInfo]:
    """Every tensor of the checkpoint by name, across shards and against the shard index."""
    tensors: dict[str, TensorInfo] = {}
    for path in weight_files:
        for t in read_header(path):
            if t.name in tensors:
                raise Rejected(
                    f"tensor {t.name} is stored twice ({tensors[t.name].file} and {t.file}); "
                    "push one checkpoint only"
                )
            tensors[t.name] = t
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        from paddock.checks.config import read_json

        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise Rejected(
                "model.safetensors.index.json has no weight_map; save the model again with "
                "save_pretrained()"
            )
        wrong = sorted(
            name
            for name, file in weight_map.items()
            if name not in tensors or tensors[name].file != file
        )
        if wrong:
            raise Rejected(
                f"model.safetensors.index.json places {len(wrong)} tensor(s) in shards that do "
                f"not hold them ({_listed(wrong)}); push the index and shards of one save"
            )
    return tensors


def parameter_count(tensors: dict[str, TensorInfo]) -> int:
    return sum(t.numel for t in tensors.values())


def check_against_config(tensors: dict[str, TensorInfo], expected: Expected) -> None:
    """Refuse a checkpoint whose tensors are not the ones its config describes."""
    known = {**expected.required, **expected.optional}
    for name, shape in known.items():
        t = tensors.get(name)
        if t is None:
            continue
        if t.shape != shape:
            raise Rejected(
                f"tensor {name} in {t.file} has shape {list(t.shape)} but config.json implies "
                f"{list(shape)} ({expected.facts}): the weights and config.json do not belong "
                "together; push the config.json saved with these weights"
            )
        if t.dtype not in FLOAT_DTYPES:
            raise Rejected(
                f"tensor {name} in {t.file} is stored as {t.dtype}; paddock serves unquantized "
                "floating-point weights (F32, F16, BF16): push the unquantized checkpoint"
            )
    missing = sorted(set(expected.required) - set(tensors))
    if missing:
        raise Rejected(
            f"the weights lack {len(missing)} tensor(s) that config.json describes "
            f"({_listed(missing)}); loaders would fill them with random values: save the "
            f"complete model with save_pretrained() or fix config.json ({expected.facts})"
        )
    extra = sorted(
        name
        for name in tensors
        if name not in known and not name.endswith(expected.ignorable_suffixes)
    )
    if extra:
        raise Rejected(
            f"the weights hold {len(extra)} tensor(s) that config.json does not describe "
            f"({_listed(extra)}): config.json does not match the checkpoint "
            f"({expected.facts}); push the config.json saved with these weights"
        )
