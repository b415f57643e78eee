"""Entry point that runs olah's server with larger streaming chunks.

Why: olah 0.5.4 serves a mirrored file as a *sync* generator of 4 KiB chunks, and
Starlette iterates sync generators with one thread-pool hop per chunk. A 540 MB
SmolLM2 ``model.safetensors`` is ~130 000 hops: ~36 s per download here. Regrouping
the same bytes into 4 MiB chunks makes it ~1-2 s. Nothing else about olah changes
(same routes, headers, status codes); :class:`paddock.testkit.hub.HubMirror` uses
this module unless asked for stock olah (``fast_streaming=False``).

Run as ``python -m paddock.testkit._olah_main <olah arguments>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

CHUNK_BYTES = 4 << 20


def _rechunk(stream: Iterable[bytes], size: int = CHUNK_BYTES) -> Iterator[bytes]:
    buf = bytearray()
    for chunk in stream:
        buf += chunk
        if len(buf) >= size:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)


def _patch() -> None:
    from olah.mirror import repos

    original = repos.LocalMirrorRepo.get_file

    def get_file(self: Any, commit_hash: str, path: str) -> Any:
        stream = original(self, commit_hash, path)
        return None if stream is None else _rechunk(stream)

    repos.LocalMirrorRepo.get_file = get_file  # type: ignore[method-assign]


def main() -> None:
    _patch()
    from olah.server import main as olah_main

    olah_main()


if __name__ == "__main__":
    main()
