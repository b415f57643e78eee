"""What a source's file *listing* alone says: refused before a byte of weights is fetched.

Names, sizes and kinds of files are known as soon as a source is listed (a hub tree, an S3
listing, a directory walk), so everything decidable from them is decided then: a name that
would write outside the download directory, custom code, pickle files, missing essentials
and sizes over the limit. A refusal here costs one listing instead of gigabytes.

Local directories are walked without following symbolic links, and any link or special
file refuses the submission: a link is the one way a directory under the allowed roots can
make the platform read a file outside them, and a FIFO named ``config.json`` would hang
the copy.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from paddock.bundle import SIDE_FILES
from paddock.errors import Rejected

__all__ = [
    "NEEDED",
    "PICKLE",
    "SIDE_FILE_LIMIT",
    "SourceFile",
    "safe_name",
    "check_listing",
    "check_fetched",
    "walk_local",
    "human_bytes",
]

# What vLLM needs to serve a model (and the sanity stage needs to check it).
NEEDED = ("*.safetensors", "*.safetensors.index.json", *SIDE_FILES)
# Formats whose loading runs pickle (torch.save, joblib, plain pickle).
PICKLE = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt", "*.joblib", "*.dill")
# Config, tokenizer and template files are small; a larger one is an attack on memory.
SIDE_FILE_LIMIT = 64 * 1024 * 1024
_TOKENIZER = ("tokenizer.json", "tokenizer.model")


@dataclass(frozen=True)
class SourceFile:
    """One file of a source, as its listing gives it (size None: the source did not say)."""

    name: str
    size: int | None = None


def human_bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _shown(name: str) -> str:
    return repr(name if len(name) <= 80 else name[:77] + "...")


def safe_name(name: str) -> str:
    """``name`` as a relative POSIX path that stays inside the download directory."""
    bad = (
        not name
        or name.startswith(("/", "\\"))
        or "\\" in name
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
        or any(part in ("", ".", "..") for part in name.split("/"))
        or PurePosixPath(name).is_absolute()
    )
    if bad:
        raise Rejected(
            f"the source lists a file named {_shown(name)}, which is absolute or climbs out "
            "of the model directory; rename it to a plain relative path (no '..', no "
            "leading '/') and submit again"
        )
    return name


def _top(name: str) -> bool:
    return "/" not in name


def _matches(name: str, patterns: Iterable[str]) -> bool:
    base = name.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(base, p) for p in patterns)


def _listed(names: Sequence[str], limit: int = 3) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_listing(
    files: Sequence[SourceFile],
    *,
    patterns: Sequence[str],
    allow_custom_code: bool,
    allow_pickle: bool,
    max_bytes: int | None,
) -> list[str]:
    """Refuse what the listing shows is unservable; returns the names to fetch.

    ``max_bytes`` bounds what would be fetched (None: sizes are checked elsewhere).
    """
    names = [safe_name(f.name) for f in files]
    code = sorted(n for n in names if n.endswith(".py"))
    if code and not allow_custom_code:
        raise Rejected(
            f"the repository contains custom code ({_listed(code)}); paddock serves standard "
            "architectures only and never runs a submission's code: remove the .py files "
            "(or ask an operator to allow custom code)"
        )
    pickles = sorted(n for n in names if _matches(n, PICKLE))
    if pickles and not allow_pickle:
        raise Rejected(
            f"the repository holds pickle files ({_listed(pickles)}), which can run code "
            "when loaded, so paddock refuses them even beside safetensors: delete them and "
            "keep only *.safetensors weights (convert with `model.save_pretrained(dir, "
            "safe_serialization=True)`)"
        )
    top = {n for n in names if _top(n)}
    if "config.json" not in top:
        raise Rejected(
            "config.json is missing at the top of the repository; save the model with "
            "save_pretrained() and push every file it writes"
        )
    weights = [n for n in top if n.endswith(".safetensors")]
    if not weights and not (allow_pickle and any(_matches(n, PICKLE) for n in top)):
        raise Rejected(
            "no weights found: the repository has no *.safetensors files at its top level; "
            "save the model with `save_pretrained(dir, safe_serialization=True)` and push them"
        )
    if not top & set(_TOKENIZER):
        raise Rejected(
            "no tokenizer: tokenizer.json (or tokenizer.model) is missing; save it with "
            "tokenizer.save_pretrained() into the model directory and push it"
        )
    wanted = [f for f in files if _top(f.name) and _matches(f.name, patterns)]
    for f in wanted:
        is_weights = _matches(f.name, ("*.safetensors", *PICKLE))
        if not is_weights and f.size is not None and f.size > SIDE_FILE_LIMIT:
            raise Rejected(
                f"{f.name} is {human_bytes(f.size)}; config, tokenizer and template files "
                f"must be under {human_bytes(SIDE_FILE_LIMIT)}: check that the right file "
                "was pushed"
            )
    if max_bytes is not None:
        total = sum(f.size or 0 for f in wanted)
        _within(total, max_bytes)
    return sorted(f.name for f in wanted)


def _within(total: int, max_bytes: int) -> None:
    if total > max_bytes:
        raise Rejected(
            f"the model's files take {human_bytes(total)}; the limit is "
            f"{human_bytes(max_bytes)}: submit a smaller model (or ask an operator to raise "
            "PADDOCK_MAX_MODEL_BYTES)"
        )


def check_fetched(dest: Path, *, max_bytes: int) -> int:
    """The bytes actually fetched into ``dest``, refused over the limit (for sources that
    do not list sizes, or whose files grew between listing and download)."""
    total = 0
    for root, dirs, names in os.walk(dest, followlinks=False):
        for name in [*names, *dirs]:
            st = os.lstat(os.path.join(root, name))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    _within(total, max_bytes)
    return total


def walk_local(src: Path) -> list[SourceFile]:
    """Every regular file under ``src`` with its size, never following a link.

    Refuses symbolic links (wherever they point: the content must be the directory's own)
    and special files (FIFOs, sockets, devices).
    """
    found: list[SourceFile] = []
    for root, dirs, names in os.walk(src, followlinks=False):
        for name in sorted([*dirs, *names]):
            path = Path(root) / name
            rel = path.relative_to(src).as_posix()
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(path)
                resolved = (path.parent / target).resolve()
                where = "inside" if resolved.is_relative_to(src) else "outside"
                raise Rejected(
                    f"{rel} is a symbolic link to {target!r} ({where} the source directory); "
                    "paddock never follows links: replace it with the file itself (e.g. copy "
                    "the model with `cp -rL`) and submit again"
                )
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                raise Rejected(
                    f"{rel} is not a regular file (a FIFO, socket or device); remove it from "
                    "the model directory and submit again"
                )
            found.append(SourceFile(name=rel, size=st.st_size))
    return sorted(found, key=lambda f: f.name)
