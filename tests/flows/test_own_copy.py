"""Deploy maps the bundle its run serialized on this machine only when it is the stored
one: the same digest, recomputed from the bytes on disk. A copy that differs by a byte, a
copy that is gone, or a target told not to, streams the stored tensors from S3 instead —
with the config and tokenizer fetched from the store and the keys handed to the server.

The real store (moto S3) and the real spec the deploy stage builds; no server is started:
the local backend's command line shows what vLLM would load.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blocks import model_store
from deployments.local import LocalBackend
from paddock import crud
from paddock.bundle import work_bundle_dir
from paddock.contracts import Bundle, StoredBundle
from paddock.storage import bundle_manifest
from tasks.deploy import build_spec, maps_run_copy
from tests.utils.blocks import use_local_store, use_s3_store, use_serving

pytestmark = pytest.mark.usefixtures("prefect_harness")
PREFIX = "own-copy"


@pytest.fixture
def serialized(s3: Any, tiny_model: Path) -> Iterator[tuple[str, StoredBundle]]:
    """A submission whose bundle was serialized into its work dir and uploaded."""
    use_s3_store(s3, PREFIX)
    use_serving()
    sub = crud.create_submission(developer="own", source="org/own", display_name="own")
    local = work_bundle_dir(sub.id)
    local.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tiny_model / name, local / name)
    (local / "model.tensors").write_bytes(bytes(range(256)) * 4096)
    manifest = bundle_manifest(local)
    store = model_store().open()
    store.put_bundle(local, manifest)
    yield (
        sub.id,
        StoredBundle(
            digest=manifest["digest"],
            uri=store.bundle_uri(manifest["digest"]),
            files=tuple(manifest["files"]),
            bytes=sum(f["size"] for f in manifest["files"].values()),
            created=True,
        ),
    )
    use_serving()
    store.delete_bundle(manifest["digest"])


def _loaded(cmd: list[str]) -> tuple[str, dict[str, Any]]:
    """vLLM's --model directory and tensorizer's settings, from the command line."""
    extra = json.loads(cmd[cmd.index("--model-loader-extra-config") + 1])
    return cmd[cmd.index("--model") + 1], extra


def test_the_identical_copy_on_this_machine_is_mapped(
    serialized: tuple[str, StoredBundle], tmp_path: Path
) -> None:
    sid, stored = serialized
    spec = build_spec(sid, stored)

    local = work_bundle_dir(sid)
    assert spec.bundle_uri == f"{local}/"
    assert spec.env == {} and spec.s3_endpoint is None, "no keys for a server reading no store"
    model_dir, extra = _loaded(LocalBackend(python=Path(sys.executable)).command(spec, 8000))
    assert model_dir == str(local)
    assert extra == {"tensorizer_uri": str(local / "model.tensors")}


def test_the_bundle_the_run_just_serialized_is_mapped_before_it_is_stored(
    serialized: tuple[str, StoredBundle], tmp_path: Path
) -> None:
    """What the flow hands deploy when the upload runs beside it: the run's own bundle,
    mapped as it is (no store read, no keys), with the same limits the stored one gets."""
    sid, stored = serialized
    local = work_bundle_dir(sid)
    bundle = Bundle(path=local, tensors=1, bytes=stored.bytes, read_s=0, write_s=0, verify_s=0)
    assert maps_run_copy(), "a local server, an S3 store, local_copy on"

    spec = build_spec(sid, bundle)

    assert spec.bundle_uri == f"{local}/"
    assert spec.env == {} and spec.s3_endpoint is None and spec.local_config_dir is None
    assert spec.config_files == ("config.json", "tokenizer.json", "tokenizer_config.json")
    assert spec.max_model_len == build_spec(sid, stored).max_model_len
    model_dir, extra = _loaded(LocalBackend(python=Path(sys.executable)).command(spec, 8000))
    assert model_dir == str(local)
    assert extra == {"tensorizer_uri": str(local / "model.tensors")}

    use_serving(local_copy=False)
    assert not maps_run_copy(), "told to stream: the upload must come first"
    use_serving()
    use_local_store(tmp_path / "store")
    assert not maps_run_copy(), "a local store's copy is short: it stays before deploy"


def _tampered(sid: str) -> None:
    tensors = work_bundle_dir(sid) / "model.tensors"
    data = bytearray(tensors.read_bytes())
    data[len(data) // 2] ^= 1
    tensors.write_bytes(bytes(data))


def _gone(sid: str) -> None:
    shutil.rmtree(work_bundle_dir(sid))


def _turned_off(sid: str) -> None:
    use_serving(local_copy=False)


@pytest.mark.parametrize("why", [_tampered, _gone, _turned_off], ids=lambda f: f.__name__[1:])
def test_otherwise_the_stored_tensors_stream_from_s3(
    serialized: tuple[str, StoredBundle], s3: Any, why: Any
) -> None:
    sid, stored = serialized
    why(sid)

    spec = build_spec(sid, stored)

    assert spec.bundle_uri == stored.uri and stored.uri.startswith("s3://")
    assert spec.local_config_dir is not None
    assert (spec.local_config_dir / "config.json").is_file(), "config fetched from the store"
    assert spec.s3_endpoint == s3.endpoint
    assert spec.env["S3_ACCESS_KEY_ID"] == s3.access_key
    model_dir, extra = _loaded(LocalBackend(python=Path(sys.executable)).command(spec, 8000))
    assert model_dir == str(spec.local_config_dir)
    assert extra["tensorizer_uri"] == stored.uri + "model.tensors"
