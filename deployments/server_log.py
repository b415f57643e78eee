"""Reading a server's log while it grows: a marker's first appearance, and the last lines.

A vLLM log can reach megabytes over a long life; both readers look only at what they
need (what was appended since the last look, the last 256 KiB), so polling it during a
start or quoting it in an error costs the same on the first minute and the hundredth.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["LogWatch", "tail_of"]


class LogWatch:
    """Has ``marker`` appeared in a growing log? Reads only what was appended since the
    last call, keeping a marker's length of overlap so a line split across reads counts."""

    def __init__(self, path: Path, marker: bytes) -> None:
        self.path = path
        self.marker = marker
        self.offset = 0
        self.tail = b""
        self.found = False

    def seen(self) -> bool:
        if self.found:
            return True
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return False
        self.offset += len(chunk)
        window = self.tail + chunk
        self.found = self.marker in window
        self.tail = window[-len(self.marker) :]
        return self.found


def tail_of(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])
