"""The Unix sockets the stack's helpers listen on (spare keeper, launcher, worker).

What they pass over them — a spare's stdin, a flow run's environment and streams — is
this user's alone, so the socket is created mode 0600 rather than changed to it after
the bind, when another user could already have connected.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from paddock.errors import PaddockError

__all__ = ["MAX_PATH_BYTES", "private_listener"]

# sun_path holds 108 bytes on Linux, the terminating NUL included.
MAX_PATH_BYTES = 107


def private_listener(path: Path, backlog: int = 8) -> socket.socket:
    """Listen at `path`, replacing the file a killed predecessor left there."""
    size = len(os.fsencode(path))
    if size > MAX_PATH_BYTES:
        raise PaddockError(
            f"the socket path {path} is {size} bytes, longer than a Unix socket allows "
            f"({MAX_PATH_BYTES}): set PADDOCK_HOME to a shorter directory"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    listener.listen(backlog)
    return listener
