"""Read what a pickle would import, without unpickling it.

Pickle files are refused unless an operator allows them; when allowed, each is still read
as a stream of opcodes (``pickletools.genops``, which executes nothing) and every global it
would import is compared with the handful a tensor checkpoint needs. Anything else —
``builtins.exec``, ``os.system``, a name the scan cannot resolve — refuses the file before
any loader sees it. Loaders then use ``torch.load(weights_only=True)`` as a second wall.
"""

from __future__ import annotations

import pickletools
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from paddock.errors import Rejected

__all__ = ["pickle_globals", "check_pickle"]

_STORAGES = (
    "Float",
    "Half",
    "BFloat16",
    "Double",
    "Long",
    "Int",
    "Short",
    "Char",
    "Byte",
    "Bool",
)
ALLOWED = frozenset(
    {
        ("collections", "OrderedDict"),
        ("torch._utils", "_rebuild_tensor"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._tensor", "_rebuild_from_type_v2"),
        ("torch", "Size"),
        ("torch", "float32"),
        ("torch", "float16"),
        ("torch", "bfloat16"),
        *(("torch", f"{kind}Storage") for kind in _STORAGES),
    }
)
_STRINGS = {
    "SHORT_BINUNICODE",
    "BINUNICODE",
    "BINUNICODE8",
    "UNICODE",
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
}
_PY2 = {"__builtin__": "builtins", "copy_reg": "copyreg"}  # protocol 2 spells them so
_MAX_PICKLES = 8  # the legacy torch format is a few pickles followed by raw bytes


def _globals_in(stream: IO[bytes]) -> Iterator[tuple[str, str] | None]:
    """Globals one pickle imports; None for one whose name the scan cannot resolve."""
    recent: list[str | None] = []
    memo: dict[int, str | None] = {}
    for op, arg, _pos in pickletools.genops(stream):
        name = op.name
        if name in _STRINGS:
            recent.append(arg if isinstance(arg, str) else None)
        elif name == "MEMOIZE":
            memo[len(memo)] = recent[-1] if recent else None
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = recent[-1] if recent else None  # type: ignore[arg-type]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            recent.append(memo.get(int(arg)))  # type: ignore[arg-type]
        elif name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            yield _PY2.get(module, module), attr
        elif name == "STACK_GLOBAL":
            pushed = recent[-2:] if len(recent) >= 2 else [None, None]
            where, what = pushed[0], pushed[1]
            yield (_PY2.get(where, where), what) if where and what else None
        else:
            recent.append(None)


def pickle_globals(path: Path) -> list[tuple[str, str] | None]:
    """Every global the pickles in ``path`` (plain, legacy torch or zip torch) import."""
    found: list[tuple[str, str] | None] = []
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if member.endswith(".pkl"):
                    with archive.open(member) as fh:
                        found.extend(_globals_in(fh))
        return found
    with path.open("rb") as fh:
        for index in range(_MAX_PICKLES):
            start = fh.tell()
            try:
                found.extend(_globals_in(fh))
            except ValueError:
                if index == 0:
                    raise
                break  # raw storage bytes after the legacy format's pickles
            if fh.tell() == start or not fh.peek(1):
                break
    return found


def check_pickle(path: Path) -> None:
    """Refuse a pickle that imports anything a tensor checkpoint does not need."""
    try:
        names = pickle_globals(path)
    except (ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise Rejected(
            f"{path.name} is not a readable pickle ({exc}); convert the weights to safetensors"
        ) from exc
    bad = sorted(
        {
            ".".join(n) if n else "(a name the scan cannot resolve)"
            for n in names
            if n not in ALLOWED
        }
    )
    if bad:
        raise Rejected(
            f"{path.name} is a pickle that imports {', '.join(bad[:3])} when loaded: it would "
            "run code, so paddock refuses it; push the weights as *.safetensors instead"
        )
