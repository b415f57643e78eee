"""The model store: content-addressed bundles, verified, and never half-written."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from paddock.errors import TransientError
from paddock.storage import MANIFEST, LocalStore, S3Store, bundle_manifest


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    d = tmp_path / "bundle"
    d.mkdir()
    (d / "model.tensors").write_bytes(b"\x01" * (12 * 1024 * 1024 + 5))  # multipart-sized
    (d / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    return d


def _s3(s3: Any, prefix: str) -> S3Store:
    store = S3Store(
        "models",
        prefix,
        endpoint_url=s3.endpoint,
        access_key_id=s3.access_key,
        secret_access_key=s3.secret_key,
    )
    store.PART_SIZE = 5 * 1024 * 1024  # exercise multipart with several parts
    return store


def test_s3_round_trip_is_content_addressed_and_verified(s3: Any, bundle: Path) -> None:
    store = _s3(s3, "storage-rt")
    manifest = bundle_manifest(bundle)
    seen: list[int] = []

    stored = store.put_bundle(bundle, manifest, lambda done, total: seen.append(done))

    assert {f.name for f in stored} == {"model.tensors", "config.json"}
    tensors = next(f for f in stored if f.name == "model.tensors")
    assert tensors.uri == f"s3://models/storage-rt/models/{manifest['digest']}/model.tensors"
    body = s3.client().get_object(Bucket="models", Key=tensors.uri.split("/", 3)[3])["Body"].read()
    assert hashlib.sha256(body).hexdigest() == tensors.sha256
    assert seen and seen[-1] == sum(f.size for f in stored)
    assert store.get_manifest(manifest["digest"]) == manifest
    # The same content again uploads nothing and lands on the same key.
    again = store.put_bundle(bundle, bundle_manifest(bundle), lambda d, t: seen.append(-1))
    assert again == stored and -1 not in seen


def test_failed_upload_leaves_nothing_under_final_keys(s3: Any, bundle: Path) -> None:
    store = _s3(s3, "storage-fail")
    manifest = bundle_manifest(bundle)
    manifest["files"]["config.json"]["sha256"] = "0" * 64  # the file is not what was checked

    with pytest.raises(TransientError, match="changed"):
        store.put_bundle(bundle, manifest)

    listing = s3.client().list_objects_v2(Bucket="models", Prefix="storage-fail")
    assert listing.get("KeyCount", 0) == 0
    assert store.get_manifest(manifest["digest"]) is None


def test_interrupted_upload_is_aborted(s3: Any, bundle: Path) -> None:
    store = _s3(s3, "storage-abort")
    manifest = bundle_manifest(bundle)

    def boom(done: int, total: int) -> None:
        if done > 5 * 1024 * 1024:
            raise KeyboardInterrupt

    with pytest.raises((TransientError, KeyboardInterrupt)):
        store.put_bundle(bundle, manifest, boom)

    client = s3.client()
    assert client.list_objects_v2(Bucket="models", Prefix="storage-abort").get("KeyCount", 0) == 0
    uploads = client.list_multipart_uploads(Bucket="models", Prefix="storage-abort")
    assert not uploads.get("Uploads")


def test_parts_grow_to_stay_within_s3s_limit(s3: Any) -> None:
    store = _s3(s3, "storage-parts")
    assert store.part_size(12 * 1024 * 1024) == store.PART_SIZE
    huge = store.PART_SIZE * store.MAX_PARTS + 1
    size = store.part_size(huge)
    assert size > store.PART_SIZE and size % (1024 * 1024) == 0
    assert -(-huge // size) <= store.MAX_PARTS


def test_local_store_appears_atomically(tmp_path: Path, bundle: Path) -> None:
    store = LocalStore(tmp_path / "store")
    manifest = bundle_manifest(bundle)
    stored = store.put_bundle(bundle, manifest)
    final = tmp_path / "store" / "models" / manifest["digest"]
    assert (final / MANIFEST).is_file()
    assert sorted(p.name for p in (tmp_path / "store" / "models").iterdir()) == [manifest["digest"]]
    assert {f.sha256 for f in stored} == {m["sha256"] for m in manifest["files"].values()}
    fetched = store.fetch(manifest["digest"], ["config.json"], tmp_path / "cfg")
    assert (fetched / "config.json").read_text() == (bundle / "config.json").read_text()
    store.delete_bundle(manifest["digest"])
    assert not final.exists()


def test_bundle_without_tensors_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(Exception, match="model.tensors"):
        bundle_manifest(tmp_path)


def test_a_file_that_changed_after_its_manifest_or_during_its_upload_is_not_stored(
    s3: Any, bundle: Path
) -> None:
    store = _s3(s3, "storage-changed")
    tensors = bundle / "model.tensors"
    os.utime(tensors, ns=(0, 10**18))  # any write from now on moves the time
    manifest = bundle_manifest(bundle)

    def rewrite(done: int, total: int) -> None:  # same size, other bytes, mid-upload
        if done >= store.PART_SIZE:
            fd = os.open(tensors, os.O_WRONLY)
            try:
                os.pwrite(fd, b"\x02" * 1024, 9 * 1024 * 1024)
            finally:
                os.close(fd)

    with pytest.raises(TransientError, match="changed while it was being uploaded"):
        store.put_bundle(bundle, manifest, rewrite)
    with tensors.open("ab") as grown:  # a different size from the manifest's
        grown.write(b"\x03")
    with pytest.raises(TransientError, match="changed after its manifest was made"):
        store.put_bundle(bundle, manifest)

    client = s3.client()
    assert client.list_objects_v2(Bucket="models", Prefix="storage-changed").get("KeyCount", 0) == 0
    assert not client.list_multipart_uploads(Bucket="models", Prefix="storage-changed").get(
        "Uploads"
    )
