"""Bundle reference counts: a shared bundle stays until its last user lets it go."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from paddock import bundles, crud
from paddock.models import Status
from paddock.storage import LocalStore, S3Store, Store
from tests.maintenance.seeding import hold, put_bundle, submission


def _s3_store(s3: Any) -> S3Store:
    return S3Store(
        "models",
        f"bundles-{uuid.uuid4().hex[:8]}",
        endpoint_url=s3.endpoint,
        access_key_id=s3.access_key,
        secret_access_key=s3.secret_key,
    )


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "s3":
        return _s3_store(request.getfixturevalue("s3"))
    return LocalStore(tmp_path / "store")


def test_a_shared_bundle_stays_until_both_users_release_it(store: Store, tmp_path: Path) -> None:
    digest = put_bundle(store, tmp_path, b"shared weights")
    first, second = submission(Status.failed), submission(Status.deployed, developer="bob")
    hold(first, store, digest)
    hold(second, store, digest)
    assert bundles.users_of(digest) == [first, second]

    released = bundles.release(first, store=store)

    assert released == bundles.Released(first, digest, deleted=False, users=(second,))
    assert bundles.is_live(store, digest)
    assert crud.list_artifacts(submission_id=first) == []
    assert bundles.users_of(digest) == [second]

    released = bundles.release(second, store=store)

    assert released == bundles.Released(second, digest, deleted=True, users=())
    assert not bundles.is_live(store, digest)
    assert bundles.users_of(digest) == []
    # Releasing again, or a submission that never held a bundle, does nothing.
    assert bundles.release(second, store=store) == bundles.Released(second, None, False, ())


def test_a_release_deletes_the_archived_copy_with_the_last_reference(
    store: Store, tmp_path: Path
) -> None:
    digest = put_bundle(store, tmp_path, b"archived weights")
    sid = submission(Status.archived)
    hold(sid, store, digest)
    bundles.archive(store, digest)
    assert digest in bundles.archived(store) and not bundles.is_live(store, digest)

    assert bundles.release(sid, store=store).deleted

    assert bundles.archived(store) == {}


def test_s3_archive_copies_to_glacier_ir_under_archive_and_deletes_the_original(
    s3: Any, tmp_path: Path
) -> None:
    store = _s3_store(s3)
    digest = put_bundle(store, tmp_path, b"cold weights")

    uri = bundles.archive(store, digest)

    assert uri == f"s3://models/{store.prefix}/archive/models/{digest}/"
    client = s3.client()
    listing = client.list_objects_v2(Bucket="models", Prefix=store.prefix)["Contents"]
    keys = {o["Key"]: o.get("StorageClass") for o in listing}
    archived = f"{store.prefix}/archive/models/{digest}/"
    assert keys[archived + "model.tensors"] == "GLACIER_IR"
    assert keys[archived + "config.json"] == "GLACIER_IR"
    assert archived + bundles.ARCHIVED_MARKER in keys
    assert not any(k.startswith(f"{store.prefix}/models/") for k in keys)
    assert not bundles.is_live(store, digest)

    bundles.delete_archived(store, digest)

    assert client.list_objects_v2(Bucket="models", Prefix=store.prefix).get("KeyCount") == 0


def test_local_archive_is_a_move_into_the_archive_directory(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    digest = put_bundle(store, tmp_path, b"local weights")

    bundles.archive(store, digest)

    moved = tmp_path / "store" / "archive" / "models" / digest
    assert (moved / "model.tensors").read_bytes() == b"local weights"
    assert not (tmp_path / "store" / "models" / digest).exists()
    assert list(bundles.archived(store)) == [digest]


# --------------------------------------------------------------------------- races


class CountingStore(LocalStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.deletes = 0
        self._lock = threading.Lock()

    def delete_bundle(self, digest: str) -> None:
        with self._lock:
            self.deletes += 1
        super().delete_bundle(digest)


@pytest.fixture
def slow_deletes(database: str) -> Iterator[None]:
    """Pause after each DELETE of artifact rows, inside its transaction: every releaser
    has deleted its own rows before any of them counts the others, unless they wait."""
    from paddock.db import get_engine

    engine = get_engine()

    def pause(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM ARTIFACTS"):
            time.sleep(0.2)

    event.listen(engine, "after_cursor_execute", pause)
    yield
    event.remove(engine, "after_cursor_execute", pause)


@pytest.mark.usefixtures("slow_deletes")
def test_users_releasing_at_once_delete_the_bundle_exactly_once(tmp_path: Path) -> None:
    """Each releaser sees the others' rows until they commit: without a lock on the
    bundle's rows every one of them would keep it (and it would never be deleted)."""
    store = CountingStore(tmp_path / "store")
    digest = put_bundle(store, tmp_path, b"raced weights " + uuid.uuid4().bytes)
    users = [submission(Status.failed, name=f"copy-{i}") for i in range(6)]
    for sid in users:
        hold(sid, store, digest)
    barrier = threading.Barrier(len(users))
    results: list[bundles.Released] = []

    def releaser(sid: str) -> None:
        barrier.wait()
        results.append(bundles.release(sid, store=store))

    threads = [threading.Thread(target=releaser, args=(sid,)) for sid in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(r.deleted for r in results) == [False] * 5 + [True]
    assert store.deletes == 1
    assert not bundles.is_live(store, digest) and bundles.users_of(digest) == []


@pytest.mark.usefixtures("prefect_harness")
def test_a_rollback_keeps_a_bundle_another_submission_serves(tmp_path: Path) -> None:
    from tasks.rollback import roll_back
    from tests.utils.blocks import use_local_store

    store = use_local_store(tmp_path / "store").open()
    digest = put_bundle(store, tmp_path, b"rolled back weights")
    creator, copy = submission(Status.failed), submission(Status.deployed, developer="bob")
    hold(creator, store, digest)
    hold(copy, store, digest)

    roll_back.fn(creator)  # the run that uploaded the bundle fails for good

    assert bundles.is_live(store, digest), "the copy still serves it"
    assert bundles.users_of(digest) == [copy]

    roll_back.fn(copy)

    assert not bundles.is_live(store, digest)
