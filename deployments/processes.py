"""A process group on this machine, found and stopped from any process.

A local model server is a process group (vLLM forks an engine core and workers); paddock
stops the whole group and must tell a live leader from a reused pid, so it reads
`/proc` directly rather than trusting a pid alone.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["proc_stat", "proc_start", "group_members", "signal_group"]


def proc_stat(pid: int) -> tuple[str | None, int | None]:
    """(state letter, start time in clock ticks) of `pid`, or (None, None) if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None, None
        except PermissionError:
            pass
        return ("R" if not Path("/proc").is_dir() else None), None
    fields = raw[raw.rfind(")") + 2 :].split()
    return fields[0], int(fields[19])


def proc_start(pid: int) -> int | None:
    return proc_stat(pid)[1]


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`."""
    if not Path("/proc").is_dir():  # not Linux: ask the kernel directly
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
