"""Directories that appear whole or not at all.

Several things paddock writes (a serialized bundle, a store entry, a converted model) are
read by other processes; a reader must never see one half-written, and a failed writer
must leave nothing behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["replacing_dir"]


@contextmanager
def replacing_dir(dest: Path) -> Iterator[Path]:
    """Yield an empty sibling directory to fill; on success it replaces `dest` by rename.

    On any error the partial directory is removed and `dest` is left as it was.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        yield work
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(work, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
