"""Faults on the wire: the hub and the model store misbehaving mid-transfer.

A real proxy (paddock/testkit/faulty_proxy.py) stands between paddock and the real olah
hub mirror or moto S3 server and cuts a connection after so many bytes, answers 503s, or
refuses connections for a while. Each test drives the real stage (download, upload) and
checks what the fault left: the right bytes, or nothing half-written.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

import tasks.download as download_module
import tasks.upload as upload_module
from blocks import ModelSource, ModelStore
from paddock import crud, lifecycle, sources
from paddock.contracts import Bundle
from paddock.models import StageStatus, Status
from paddock.storage import MANIFEST, S3Store
from paddock.testkit.faulty_proxy import FaultyProxy
from tasks.download import download
from tasks.upload import upload
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

    The hub client writes a response in whole pieces (paddock asks for 1 MiB), so it can
    only resume past the last whole piece; with the 2 MB tiny model the piece is made
    64 KiB so that resuming shows.
    """
    monkeypatch.setattr(sources, "HUB_CHUNK_BYTES", PIECE)
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
        outcome="retried in place, resume asked",
        reason=(
            "the hub client asked for the rest (a Range request from the last whole piece "
            "it held) within the same attempt; the file arrived whole with the hub's "
            "sha256 (this mirror ignores Range, so it was sent in full once more)"
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
    assert len(_weights_gets(hub_proxy)) == 4 * 4, "each attempt calls the hub 1 + 3 times"
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


# ------------------------------------------------------------------ S3, mid-upload


@dataclass
class StoreWatch:
    """Lists the bundle's prefix on the real S3 (not through the proxy) while a fault is
    under way: one {file name: size} per look."""

    client: Any
    prefix: str
    looks: list[dict[str, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            self.look()
            time.sleep(0.02)

    def look(self) -> None:
        listing = self.client.list_objects_v2(Bucket="models", Prefix=self.prefix)
        self.looks.append(
            {o["Key"].rsplit("/", 1)[1]: int(o["Size"]) for o in listing.get("Contents", [])}
        )


@pytest.fixture
def s3_proxy(
    s3: Any, prefect_harness: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FaultyProxy, str]]:
    """moto behind a faulty proxy, as the upload stage's model store (its own prefix);
    parts of 5 MiB (moto's minimum) so a 12 MiB bundle goes up in three, and two tries
    per request so a fault of a few seconds outlasts botocore's own retries."""
    prefix = f"transfer-faults-{uuid.uuid4().hex[:8]}"
    with FaultyProxy("127.0.0.1", _port(s3.endpoint)) as proxy:
        block = ModelStore(
            url=f"s3://models/{prefix}",
            endpoint_url=proxy.endpoint,
            access_key_id=s3.access_key,
            secret_access_key=SecretStr(s3.secret_key),
        )
        monkeypatch.setattr(upload_module, "model_store", lambda: block)
        monkeypatch.setattr(S3Store, "PART_SIZE", 5 * MiB)
        monkeypatch.setattr(S3Store, "MAX_ATTEMPTS", 2)
        yield proxy, prefix


def _bundle(root: Path) -> Bundle:
    """A 12 MiB bundle: random tensors (three parts) beside a config file."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.tensors").write_bytes(os.urandom(12 * MiB))
    (root / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    size = (root / "model.tensors").stat().st_size
    return Bundle(path=root, tensors=1, bytes=size, read_s=0.0, write_s=0.0, verify_s=0.0)


def _serialized(name: str) -> str:
    """A submission whose run has just serialized its bundle."""
    sid = crud.create_submission(developer="faults", source="org/upload", display_name=name).id
    for status in lifecycle.PIPELINE[1 : lifecycle.PIPELINE.index(Status.serializing) + 1]:
        lifecycle.transition(sid, status)
    return sid


def _upload_watched(s3: Any, prefix: str, sid: str, bundle: Bundle) -> tuple[Any, StoreWatch]:
    watch = StoreWatch(s3.client(), prefix)
    watcher = threading.Thread(target=watch.run, daemon=True)
    watcher.start()
    try:
        stored = upload(sid, bundle)
    finally:
        watch.stop.set()
        watcher.join(10)
    watch.look()  # the last object may land between two looks: the stored bundle, once more
    return stored, watch


def _assert_never_half_written(watch: StoreWatch, bundle: Bundle) -> None:
    assert any("model.tensors" in look for look in watch.looks), "it saw the object stored"
    for look in watch.looks:
        if "model.tensors" in look:
            assert look["model.tensors"] == bundle.bytes, "a partial object under its key"
        if MANIFEST in look:
            assert "model.tensors" in look, "the manifest committed a bundle not all there"


def test_an_upload_part_reset_again_and_again_is_aborted_and_retried(
    s3: Any, s3_proxy: tuple[FaultyProxy, str], tmp_path: Path, hardening: Hardening
) -> None:
    proxy, prefix = s3_proxy
    # Part 2's connection is reset after 1 MiB three times: botocore's two tries fail,
    # the first attempt is abandoned; its third reset is within the stage's retry.
    proxy.cut(method="PUT", path="partNumber=2", after_up=MiB, times=3)
    bundle = _bundle(tmp_path / "bundle")
    sid = _serialized("reset")

    stored, watch = _upload_watched(s3, prefix, sid, bundle)

    assert _attempts(sid, "upload") == [StageStatus.failed, StageStatus.succeeded]
    assert [e.fault for e in proxy.served("partNumber=2")].count("cut") == 3
    _assert_never_half_written(watch, bundle)
    client = s3.client()
    assert client.list_multipart_uploads(Bucket="models", Prefix=prefix).get("Uploads") is None
    body = client.get_object(Bucket="models", Key=f"{prefix}/models/{stored.digest}/model.tensors")
    assert hashlib.sha256(body["Body"].read()).hexdigest() == _sha(bundle.path / "model.tensors")
    hardening.record(
        category="fault",
        kind="S3 resets an upload part's connection, again and again",
        source="s3",
        stage="upload",
        outcome="aborted and retried",
        reason=(
            "the attempt's multipart upload was aborted and its objects deleted; the stage "
            "retried and stored the bundle whole (no partial object under the final key "
            "while polled, no multipart upload left)"
        ),
    )


def test_s3_going_away_mid_upload_leaves_no_multipart_upload_behind(
    s3: Any, s3_proxy: tuple[FaultyProxy, str], tmp_path: Path, hardening: Hardening
) -> None:
    proxy, prefix = s3_proxy
    # Part 2 is cut and then nothing listens for 4 s: botocore gives up on the part and an
    # abort sent at once is refused too, so paddock waits for the endpoint to abort it.
    proxy.cut(method="PUT", path="partNumber=2", after_up=MiB, then_refuse=4.0)
    bundle = _bundle(tmp_path / "bundle")
    sid = _serialized("refused")

    stored, watch = _upload_watched(s3, prefix, sid, bundle)

    assert _attempts(sid, "upload")[-1] == StageStatus.succeeded
    assert StageStatus.failed in _attempts(sid, "upload"), "the outage failed an attempt"
    aborts = [e for e in proxy.exchanges if e.method == "DELETE" and "uploadId=" in e.target]
    assert aborts, "an abort got through once the endpoint was back"
    _assert_never_half_written(watch, bundle)
    client = s3.client()
    assert client.list_multipart_uploads(Bucket="models", Prefix=prefix).get("Uploads") is None
    hardening.record(
        category="fault",
        kind="S3 goes away mid-upload (connection reset, then refused for 4 s)",
        source="s3",
        stage="upload",
        outcome="aborted and retried",
        reason=(
            "the failed attempt waited for the endpoint to come back to abort its multipart "
            "upload and delete what it wrote; the retry stored the bundle whole"
        ),
    )
