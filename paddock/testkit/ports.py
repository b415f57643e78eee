"""Free TCP ports for the local test servers.

Every server in :mod:`paddock.testkit` binds 127.0.0.1 on a port chosen here, so
parallel test sessions (and a developer's own services on well-known ports) never
collide.
"""

from __future__ import annotations

import socket
import time

__all__ = ["free_port", "wait_for_port"]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    The kernel picks the port (bind to 0); the socket is closed before returning, so
    there is a small race with other processes. The servers we start bind it within
    milliseconds, which in practice is enough.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, *, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
    """Block until something accepts TCP connections on ``host:port``.

    Raises :class:`TimeoutError` after ``timeout`` seconds. Used as a cheap first
    readiness check before protocol-level probes.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)
