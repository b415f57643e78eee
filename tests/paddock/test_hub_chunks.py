"""A hub download is cut into paddock's piece size, not the client's 10 MiB default.

The setting is a value huggingface_hub reads as it downloads; this watches the pieces the
HTTP client is asked for during a real fetch from the olah mirror, so a library upgrade
that stops reading it fails here instead of silently costing the download its speed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx2._decoders as decoders
import pytest

from paddock.sources import HUB_CHUNK_BYTES, NEEDED, FetchPolicy, fetch_hub


def test_a_hub_fetch_asks_for_megabyte_pieces(
    hub: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[int | None] = []
    original = decoders.ByteChunker.__init__

    def recording(self: decoders.ByteChunker, chunk_size: int | None = None) -> None:
        asked.append(chunk_size)
        original(self, chunk_size)

    monkeypatch.setattr(decoders.ByteChunker, "__init__", recording)
    snapshot = fetch_hub(
        "paddock-test/tiny",
        None,
        tmp_path / "source",
        endpoint=hub.endpoint,
        token=None,
        policy=FetchPolicy(patterns=NEEDED, max_bytes=1 << 30),
    )
    assert (snapshot.path / "model.safetensors").is_file()
    assert HUB_CHUNK_BYTES in asked
    assert set(asked) <= {HUB_CHUNK_BYTES, None}, asked  # None: bodies read whole (JSON)
