"""Transfers from a hub that survive faults: retried in place, then verified.

A download that a 5xx or a dropped connection interrupts is called again with the files
that already arrived kept, and every file is checked against the digest the hub lists
for it, so a resumed file stitched from the wrong bytes never passes for the model.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from paddock.config import get_settings
from paddock.errors import TransientError
from paddock.retry import RetryPolicy
from paddock.storage import sha256_file

__all__ = ["HubFile", "download_resuming", "verify_hub_files"]

_SHA = re.compile(r"[0-9a-f]{40}", re.ASCII)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class HubFile:
    """A listed file and the digest the hub gives for it: LFS sha256, else git blob id."""

    name: str
    size: int
    sha256: str | None
    blob_id: str | None


def download_resuming(download: Callable[[], None], *, where: str) -> None:
    """Run ``download`` again while it fails transiently, keeping what it already wrote.

    The hub client resumes a connection dropped mid-file by itself (a Range request for
    the rest); a 5xx ends the call and the client discards that file's partial bytes.
    Calling again in place, rather than failing the stage (whose retry starts from an
    empty directory), keeps every file that did arrive whole: only the interrupted one
    is fetched again. Safe within one attempt because the commit is pinned.
    """
    policy = RetryPolicy(retries=3, base_seconds=get_settings().retry_base_seconds)
    policy.call(download, what=f"download from {where}")


def verify_hub_files(dest: Path, listing: Sequence[HubFile], where: str) -> None:
    """Every fetched file against the hub's own digest for it: a resumed or retried
    transfer that stitched the wrong bytes together must not pass as the model."""
    for entry in listing:
        path = dest / entry.name
        if not path.is_file():
            continue
        if entry.sha256 is not None:
            ok = sha256_file(path) == entry.sha256
        elif entry.blob_id is not None and _SHA.fullmatch(entry.blob_id):
            ok = _git_blob_id(path) == entry.blob_id
        else:
            continue
        if not ok:
            path.unlink()
            raise TransientError(
                f"{entry.name} from {where} does not match the digest the hub lists for it "
                "(a transfer went wrong); fetching again"
            )


def _git_blob_id(path: Path) -> str:
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with path.open("rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()
