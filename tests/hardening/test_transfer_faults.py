"""Faults on the wire: the hub and the model store misbehaving mid-transfer.

A real proxy (paddock/testkit/faulty_proxy.py) stands between paddock and the real olah
hub mirror or moto S3 server and cuts a connection after so many bytes, answers 503s, or
refuses connections for a while. Each test drives the real stage (download, upload) and
checks what the fault left: the right bytes, or nothing half-written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tasks.download as download_module
from blocks import ModelSource
from paddock import crud
from paddock.models import StageStatus
from paddock.testkit.faulty_proxy import FaultyProxy
from tasks.download import download
from tests.hardening.conftest import Hardening

MiB = 1 << 20
PIECE = 64 * 1024
WEIGHTS = "model.safetensors"


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def _attempts(submission_id: str, name: str) -> list[StageStatus]:
    return [r.status for r in crud.stage_runs(submission_id=submission_id) if r.stage == name]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------ the hub, mid-download


@pytest.fixture
def hub_proxy(
    hub: Any, prefect_harness: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FaultyProxy]:
    """The hub mirror behind a faulty proxy, as the download stage's model source.

    The hub client writes a response in 10 MB pieces, so it can only resume past the
    first 10 MB; with the 2 MB tiny model the piece is made 64 KiB so that resuming shows.
    """
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", PIECE)
    with FaultyProxy("127.0.0.1", _port(hub.endpoint)) as proxy:
        monkeypatch.setattr(
            download_module, "model_source", lambda: ModelSource(endpoint=proxy.endpoint)
        )
        yield proxy


def _submitted(name: str) -> str:
    return crud.create_submission(
        developer="faults", source="paddock-test/tiny", display_name=name, requested_revision="v1"
    ).id


def _resumed_at(exchange: Any) -> int:
    """Where a request asked the file to start (0 without a Range header)."""
    return int(exchange.range.removeprefix("bytes=").rstrip("-") or 0)


def _weights_gets(proxy: FaultyProxy) -> list[Any]:
    return [e for e in proxy.served(f"/{WEIGHTS}") if e.method == "GET"]


def test_a_connection_dropped_mid_download_is_resumed_in_place(
    hub_proxy: FaultyProxy, tiny_model: Path, hardening: Hardening
) -> None:
    size = (tiny_model / WEIGHTS).stat().st_size
    hub_proxy.cut(path=f"/{WEIGHTS}", method="GET", after_down=MiB)
    sid = _submitted("dropped")

    snapshot = download(sid)

    assert _sha(snapshot.path / WEIGHTS) == _sha(tiny_model / WEIGHTS)
    assert _attempts(sid, "download") == [StageStatus.succeeded], "no stage retry needed"
    first, second = _weights_gets(hub_proxy)
    assert first.fault == "cut" and first.bytes_down == MiB
    # The hub client asked for the rest only; olah's offline mirror ignores Range and
    # sends the whole file, which the client then takes from the start (once, not more).
    assert MiB - 2 * PIECE < _resumed_at(second) <= MiB, second  # the whole pieces it held
    assert second.fault == "" and size <= second.bytes_down < size + 4096
    hardening.record(
        category="fault",
        kind="hub drops the connection 1 MiB into the weights",
        source="hub",
        stage="download",
        outcome="retried and resumed",
        reason=(
            "the hub client asked for the rest (a Range request from the last whole piece "
            "it held) within the same attempt; the file arrived whole with the hub's sha256 (this mirror ignores "
            "Range, so it was sent in full once more)"
        ),
    )


def test_503s_mid_download_are_retried_in_place_keeping_the_files_that_arrived(
    hub_proxy: FaultyProxy, tiny_model: Path, hardening: Hardening
) -> None:
    hub_proxy.cut(path=f"/{WEIGHTS}", method="GET", after_down=MiB)
    hub_proxy.answer(503, path=f"/{WEIGHTS}", method="GET", times=2)
    sid = _submitted("five-oh-three")

    snapshot = download(sid)

    assert _sha(snapshot.path / WEIGHTS) == _sha(tiny_model / WEIGHTS)
    assert not (snapshot.path / ".cache").exists(), "the hub client's partial files are gone"
    assert _attempts(sid, "download") == [StageStatus.succeeded], "no stage retry needed"
    gets = _weights_gets(hub_proxy)
    assert [g.fault for g in gets] == ["cut", "503", "503", ""]
    # The drop was resumed (Range); after a 503 the hub client drops its partial file,
    # so the next call asks for the whole file — but only for that one.
    assert _resumed_at(gets[1]) > 0 and _resumed_at(gets[3]) == 0
    others = [p.name for p in snapshot.path.iterdir() if p.name != WEIGHTS]
    for name in others:
        fetched = [e for e in hub_proxy.served(f"/{name}") if e.method == "GET"]
        assert len(fetched) == 1, f"{name} was fetched {len(fetched)} times"
    hardening.record(
        category="fault",
        kind="hub answers 503 twice after dropping the connection mid-file",
        source="hub",
        stage="download",
        outcome="retried in place",
        reason=(
            "the download was called again in the same attempt: files that had arrived "
            "were kept (each fetched once); the hub client drops a partial file on a 5xx, "
            "so the weights came again from their start and matched the hub's sha256"
        ),
    )


def test_a_hub_that_keeps_failing_fails_the_stage_and_leaves_no_files(
    hub_proxy: FaultyProxy, paddock_home: Path, hardening: Hardening
) -> None:
    hub_proxy.answer(503, path=f"/{WEIGHTS}", method="GET", times=1000)
    sid = _submitted("hub-down")

    with pytest.raises(Exception, match="503"):
        download(sid)

    assert _attempts(sid, "download") == [StageStatus.failed] * 4  # 1 + the stage's 3 retries
    assert not (paddock_home / "work" / sid).exists()
    hardening.record(
        category="fault",
        kind="hub answers 503 to every request for the weights",
        source="hub",
        stage="download",
        outcome="failed after retries",
        reason=(
            "4 stage attempts of 4 calls each, all 503: the stage fails as transient "
            "(a re-run resumes from download) and leaves no files"
        ),
    )
