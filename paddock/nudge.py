"""A nudge to the stack's worker: a run was just created, ask the server for it now.

The worker (``paddock.stack.worker``) otherwise finds a new run on its next poll, up to
a second later. Standard library only: the API calls it after every run it creates.
"""

from __future__ import annotations

import os
import socket

__all__ = ["SOCKET_VAR", "nudge"]

# Where the worker listens for nudges; `paddock up` sets it for every part.
SOCKET_VAR = "PADDOCK_WORKER_SOCKET"


def nudge(path: str | None = None) -> bool:
    """Tell the worker at ``path`` (default: ``$PADDOCK_WORKER_SOCKET``) that a run is
    waiting; False when no worker listens there (its poll finds the run). Never raises
    and never waits more than a moment: the run exists already, and finding it is the
    worker's job either way."""
    path = path or os.environ.get(SOCKET_VAR)
    if not path:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(0.5)
            conn.connect(path)
        return True
    except OSError:
        return False
