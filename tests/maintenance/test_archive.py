"""The daily archive on a real store (moto S3, a local directory): old bundles go to the
archive, served and recent ones stay, shared ones stay while any user needs them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from paddock import bundles, crud
from paddock.models import Status, utcnow
from paddock.storage import S3Store, Store
from tests.maintenance.conftest import Serve
from tests.maintenance.seeding import hold, put_bundle, status_of, submission
from tests.utils.blocks import use_local_store, use_s3_store
from tests.utils.vllm import pid_alive

pytestmark = pytest.mark.usefixtures("prefect_harness")

DAY = 86400.0


@pytest.fixture(params=["s3", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "s3":
        return use_s3_store(request.getfixturevalue("s3"), f"archive-{uuid.uuid4().hex[:8]}").open()
    return use_local_store(tmp_path / "store").open()


@dataclass
class Versions:
    """alice/smol, oldest first, and bob's fork of v2; `digests[sid]` is each one's bundle."""

    served: str  # v1: deployed, serving
    failed_serving: str  # v2: failed, its server not cleaned up yet
    shared: str  # v3: torn down; bob's newest holds the same bundle
    old_copy: str  # v0: failed; the same bundle as `old`
    old: str  # v4: inactive
    newest: str  # v5: failed, but the newest
    fork: str  # bob/fork: inactive, the only one of its name
    digests: dict[str, str]
    pid: int


@pytest.fixture
def versions(store: Store, tmp_path: Path, serve: Serve) -> Versions:
    ages = {"old_copy": 6, "served": 5, "failed_serving": 4.5, "shared": 4, "old": 3, "newest": 1}
    statuses = {
        "old_copy": Status.failed,
        "served": Status.deployed,
        "failed_serving": Status.failed,
        "shared": Status.torndown,
        "old": Status.inactive,
        "newest": Status.failed,
    }
    ids = {k: submission(statuses[k], age_s=ages[k] * DAY) for k in ages}
    ids["fork"] = submission(Status.inactive, developer="bob", name="fork", age_s=2 * DAY)
    contents = {k: k.encode() for k in ids}
    contents["old_copy"] = contents["old"]  # identical submissions share a bundle
    contents["fork"] = contents["shared"]
    digests = {}
    for key, sid in ids.items():
        digests[sid] = put_bundle(store, tmp_path, contents[key])
        hold(sid, store, digests[sid])
    pid = serve(ids["served"])
    serve(ids["failed_serving"])
    return Versions(**ids, digests=digests, pid=pid)


def _live(store: Store, v: Versions) -> dict[str, bool]:
    return {sid: bundles.is_live(store, d) for sid, d in v.digests.items()}


def _statuses(v: Versions) -> dict[str, Status]:
    return {sid: status_of(sid) for sid in v.digests}


def test_archive_moves_only_what_no_one_needs_and_a_second_run_does_nothing(
    store: Store, versions: Versions
) -> None:
    from flows.maintenance import archive

    v = versions
    old_digest = v.digests[v.old]

    rows = archive(keep=1)

    assert [(r["action"], r["target"], r["result"]) for r in rows] == [
        ("archive", old_digest, "done")
    ]
    assert set(rows[0]["submissions"].split(", ")) == {v.old, v.old_copy}
    live = _live(store, v)
    assert not live[v.old] and not live[v.old_copy]
    assert all(live[sid] for sid in (v.served, v.failed_serving, v.shared, v.fork, v.newest))
    assert old_digest in bundles.archived(store)
    assert status_of(v.old) == status_of(v.old_copy) == Status.archived
    assert status_of(v.served) == Status.deployed and pid_alive(v.pid)
    assert status_of(v.shared) == Status.torndown
    if isinstance(store, S3Store):
        objects = store.client.list_objects_v2(Bucket="models", Prefix=store.prefix)["Contents"]
        tensors = f"{store.prefix}/archive/models/{old_digest}/model.tensors"
        assert {o["Key"]: o.get("StorageClass") for o in objects}[tensors] == "GLACIER_IR"

    assert archive(keep=1) == []


def test_a_dry_run_changes_nothing(store: Store, versions: Versions) -> None:
    from flows.maintenance import archive

    live, statuses = _live(store, versions), _statuses(versions)

    rows = archive(dry_run=True, keep=1)

    assert [(r["action"], r["result"]) for r in rows] == [("archive", "dry run")]
    assert _live(store, versions) == live and _statuses(versions) == statuses
    assert bundles.archived(store) == {}


def test_after_the_grace_period_the_archived_bundle_is_deleted(
    store: Store, versions: Versions
) -> None:
    from flows.maintenance import archive

    v = versions
    old_digest = v.digests[v.old]
    archive(keep=1)  # archived today: a 30-day grace keeps it
    assert archive(keep=1, grace_days=30) == []

    rows = archive(keep=1, grace_days=0)

    assert [(r["action"], r["target"], r["result"]) for r in rows] == [
        ("purge", old_digest, "done")
    ]
    assert bundles.archived(store) == {}
    assert bundles.users_of(old_digest) == []
    assert crud.list_artifacts(submission_id=v.old) == []
    assert all(bundles.is_live(store, v.digests[sid]) for sid in (v.served, v.shared, v.newest))
    assert archive(keep=1, grace_days=0) == []


def test_archive_skips_a_bundle_that_became_served_after_the_plan(
    store: Store, versions: Versions, serve: Serve
) -> None:
    from paddock import maintenance

    v = versions
    refs = bundles.references()
    plan = maintenance.plan_archive(
        maintenance.read_tables(),
        refs,
        maintenance.read_store(store, (r.digest for r in refs)),
        maintenance.ArchivePolicy(keep=1, grace_days=30),
        now=utcnow(),
    )
    serve(v.old)  # redeployed meanwhile

    [outcome] = maintenance.apply_all(plan, dry_run=False, store=store)

    assert outcome.result == f"skipped: {v.old} is served now"
    assert bundles.is_live(store, v.digests[v.old]) and status_of(v.old) == Status.inactive
