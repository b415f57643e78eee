"""Who uses a stored bundle, and where it lives: the store's live place or its archive.

Bundles are content-addressed, so identical submissions share one copy. The `artifacts`
rows an upload records are the submission's reference to its bundle (the upload replaces
them whole, so a submission references one bundle); a bundle leaves the store only when
its last reference goes (`release`), never because one run happened to upload it.

Two releases of one bundle at once must not both see the other still holding it (and
both keep it) nor both delete it. `release` therefore decides inside one transaction that
first locks the bundle's rows: on Postgres `SELECT … FOR UPDATE` of every row of the
bundle, in id order (a second releaser waits, then sees the first one's rows gone); on
SQLite the `DELETE` of the submission's own rows comes before the count and takes the
database's single write lock. The store deletion happens before that transaction
commits, so a failed deletion leaves the rows, and the next release tries again.

An archived bundle (`archive`) sits under the store's `archive/` prefix, beside a marker
saying when it went there; on S3 its objects are copied with the `GLACIER_IR` storage
class, then the originals deleted.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import delete
from sqlmodel import col, select

from paddock.db import session_scope
from paddock.errors import ConfigurationError, NotFound
from paddock.models import Artifact, utcnow
from paddock.storage import MANIFEST, LocalStore, S3Store, Store

__all__ = [
    "ARCHIVE",
    "ARCHIVED_MARKER",
    "Reference",
    "Released",
    "digest_of",
    "references",
    "users_of",
    "release",
    "is_live",
    "archive",
    "archived",
    "archive_uri",
    "delete_archived",
]

ARCHIVE = "archive"
ARCHIVED_MARKER = "paddock-archived.json"


@dataclass(frozen=True)
class Reference:
    """One submission's hold on one bundle."""

    submission_id: str
    digest: str
    base: str  # the bundle's URI prefix its rows point into (`…/models/<digest>/`)
    bytes: int
    created_at: datetime  # when the upload recorded it (UTC)


@dataclass(frozen=True)
class Released:
    submission_id: str
    digest: str | None  # None: the submission held no bundle
    deleted: bool  # the bundle left the store (it was the last reference)
    users: tuple[str, ...]  # the submissions that still hold it


def _parse(uri: str) -> tuple[str, str] | None:
    """(base, digest) of an artifact URI laid out as `…/models/<digest>/<file>`."""
    path = PurePosixPath(uri)
    if path.parent.parent.name != "models" or not path.parent.name:
        return None
    return uri[: uri.rfind("/") + 1], path.parent.name


def digest_of(uri: str) -> str | None:
    parsed = _parse(uri)
    return parsed[1] if parsed else None


def _utc(moment: datetime) -> datetime:
    # Stored timestamps come back naive (SQLite, Postgres `timestamp`); they are UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def references() -> list[Reference]:
    """Every submission's bundle reference (rows outside the store's layout are ignored)."""
    with session_scope() as session:
        rows = list(session.exec(select(Artifact).order_by(col(Artifact.id))))
    held: dict[tuple[str, str], list[Artifact]] = {}
    for row in rows:
        parsed = _parse(row.uri)
        if parsed is not None:
            held.setdefault((row.submission_id, parsed[0]), []).append(row)
    out = []
    for (submission_id, base), group in held.items():
        out.append(
            Reference(
                submission_id=submission_id,
                digest=PurePosixPath(base).name,
                base=base,
                bytes=sum(r.size for r in group),
                created_at=_utc(min(r.created_at for r in group)),
            )
        )
    return out


def users_of(digest: str) -> list[str]:
    """The submissions that hold the bundle `digest`, oldest reference first."""
    with session_scope() as session:
        ids = session.exec(
            select(Artifact.submission_id)
            .where(col(Artifact.uri).contains(f"/models/{digest}/", autoescape=True))
            .order_by(col(Artifact.id))
        ).all()
    return list(dict.fromkeys(ids))


def release(submission_id: str, *, store: Store) -> Released:
    """Drop the submission's reference; delete the bundle if it was the last one.

    A bundle recorded under another store (the store block was changed since) is not
    reachable from `store` and is left where it is.
    """
    with session_scope() as session:
        uris = session.exec(
            select(Artifact.uri).where(Artifact.submission_id == submission_id)
        ).all()
        parsed = next((p for p in map(_parse, uris) if p is not None), None)
        if parsed is not None:
            in_bundle = col(Artifact.uri).startswith(parsed[0], autoescape=True)
            # Postgres: lock the bundle's rows in one order (SQLite ignores FOR UPDATE).
            session.exec(
                select(Artifact.id).where(in_bundle).order_by(col(Artifact.id)).with_for_update()
            ).all()
        # SQLite: this write takes the database's write lock before anything is counted.
        session.execute(delete(Artifact).where(col(Artifact.submission_id) == submission_id))
        if parsed is None:
            return Released(submission_id, None, deleted=False, users=())
        base, digest = parsed
        users = tuple(
            dict.fromkeys(
                session.exec(
                    select(Artifact.submission_id)
                    .where(col(Artifact.uri).startswith(base, autoescape=True))
                    .order_by(col(Artifact.id))
                ).all()
            )
        )
        deleted = not users and base == store.bundle_uri(digest)
        if deleted:
            store.delete_bundle(digest)
            delete_archived(store, digest)
    return Released(submission_id, digest, deleted=deleted, users=users)


# --------------------------------------------------------------------------- placement


def is_live(store: Store, digest: str) -> bool:
    """The bundle is complete in the store's live place (where deployments read it)."""
    return store.get_manifest(digest) is not None


def archive_uri(store: Store, digest: str) -> str:
    return _placement(store).archive_uri(digest)


def archive(store: Store, digest: str) -> str:
    """Move a live bundle to the archive; returns its archive URI. Raises NotFound.

    Repeatable after a crash: a copy already in the archive is replaced, and the live
    copy loses its manifest before anything else, so it is never half a bundle that
    still looks whole.
    """
    if not is_live(store, digest):
        raise NotFound(f"bundle {digest} is not in the store's live place")
    return _placement(store).archive(digest, {"digest": digest, "archived_at": _now_iso()})


def archived(store: Store) -> dict[str, datetime]:
    """The archived bundles and when each went to the archive."""
    return _placement(store).archived()


def delete_archived(store: Store, digest: str) -> None:
    """Delete the archived copy, if there is one."""
    _placement(store).delete_archived(digest)


def _now_iso() -> str:
    return utcnow().isoformat()


def _archived_at(marker: dict[str, Any]) -> datetime:
    return _utc(datetime.fromisoformat(str(marker["archived_at"])))


class _LocalPlacement:
    """Archive by rename: `<root>/models/<digest>` → `<root>/archive/models/<digest>`."""

    def __init__(self, store: LocalStore) -> None:
        self.store = store
        self.models = store.root / ARCHIVE / "models"

    def archive_uri(self, digest: str) -> str:
        return str(self.models / digest) + "/"

    def archive(self, digest: str, marker: dict[str, Any]) -> str:
        live = Path(self.store.bundle_uri(digest))
        target = self.models / digest
        # The marker goes in before the rename, so the archived copy always carries one.
        (live / ARCHIVED_MARKER).write_text(json.dumps(marker))
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(live, target)
        return self.archive_uri(digest)

    def archived(self) -> dict[str, datetime]:
        if not self.models.is_dir():
            return {}
        return {
            marker.parent.name: _archived_at(json.loads(marker.read_text()))
            for marker in sorted(self.models.glob(f"*/{ARCHIVED_MARKER}"))
        }

    def delete_archived(self, digest: str) -> None:
        shutil.rmtree(self.models / digest, ignore_errors=True)


class _S3Placement:
    """Archive by copy to `<prefix>/archive/models/<digest>/` (GLACIER_IR), then delete."""

    STORAGE_CLASS = "GLACIER_IR"

    def __init__(self, store: S3Store) -> None:
        self.store = store
        self.client = store.client
        self.bucket = store.bucket
        self.root = "/".join(p for p in (store.prefix, ARCHIVE, "models") if p) + "/"

    def _live(self, digest: str) -> str:
        return self.store.bundle_uri(digest).removeprefix(f"s3://{self.bucket}/")

    def _archived(self, digest: str) -> str:
        return f"{self.root}{digest}/"

    def archive_uri(self, digest: str) -> str:
        return f"s3://{self.bucket}/{self._archived(digest)}"

    def _keys(self, prefix: str) -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        return [
            obj["Key"]
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        ]

    def _delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in chunk]}
            )

    def archive(self, digest: str, marker: dict[str, Any]) -> str:
        live, target = self._live(digest), self._archived(digest)
        self.delete_archived(digest)  # an earlier archived copy of the same bundle
        keys = self._keys(live)
        for key in keys:
            # Managed copy: multipart for objects over 5 GB, as model tensors can be.
            self.client.copy(
                {"Bucket": self.bucket, "Key": key},
                self.bucket,
                target + key[len(live) :],
                ExtraArgs={"StorageClass": self.STORAGE_CLASS},
            )
        self.client.put_object(
            Bucket=self.bucket,
            Key=target + ARCHIVED_MARKER,
            Body=json.dumps(marker).encode(),
            ContentType="application/json",
        )
        manifest = live + MANIFEST
        self.client.delete_object(Bucket=self.bucket, Key=manifest)
        self._delete([k for k in keys if k != manifest])
        return self.archive_uri(digest)

    def archived(self) -> dict[str, datetime]:
        found: dict[str, datetime] = {}
        for key in self._keys(self.root):
            if key.endswith("/" + ARCHIVED_MARKER):
                body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
                found[PurePosixPath(key).parent.name] = _archived_at(json.loads(body))
        return found

    def delete_archived(self, digest: str) -> None:
        self._delete(self._keys(self._archived(digest)))


def _placement(store: Store) -> _LocalPlacement | _S3Placement:
    if isinstance(store, LocalStore):
        return _LocalPlacement(store)
    if isinstance(store, S3Store):
        return _S3Placement(store)
    raise ConfigurationError(f"{type(store).__name__} has no archive; use a local or S3 store")
