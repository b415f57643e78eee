"""The model store: where serialized bundles live (a local directory or an S3 bucket).

A *bundle* is a directory-shaped set of files (model.tensors beside config, tokenizer and
chat template) stored under a content-addressed key, `models/<digest>/`, where the digest
covers every file's name and sha256. Identical models therefore share one copy, and a
re-run that finds the bundle in place has nothing to upload.

The bundle's manifest (`paddock-bundle.json`) is written last and is the commit marker: a
bundle without one is incomplete and is never served. S3 multipart uploads are themselves
atomic (the object appears only on completion), and a failed upload deletes what it wrote
and aborts the multipart uploads it began (waiting out a short outage of the endpoint to
do so), so no half-written object is left under a final key and no orphaned parts remain.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from paddock.errors import PaddockError, TransientError
from paddock.fsutil import replacing_dir
from paddock.retry import RetryPolicy

__all__ = [
    "MANIFEST",
    "StoredFile",
    "Store",
    "LocalStore",
    "S3Store",
    "bundle_manifest",
    "sha256_file",
    "open_store",
]

MANIFEST = "paddock-bundle.json"
Progress = Callable[[int, int], None]  # (bytes done, bytes total)


@dataclass(frozen=True)
class StoredFile:
    name: str
    uri: str
    size: int
    sha256: str


def sha256_file(path: Path, *, chunk: int = 8 * 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def bundle_manifest(local_dir: Path) -> dict[str, Any]:
    """Describe a local bundle: per-file size and sha256, and the digest naming the bundle."""
    files = {
        p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(local_dir.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    if "model.tensors" not in files:
        raise PaddockError(f"{local_dir} is not a bundle: model.tensors is missing")
    listing = "\n".join(f"{name} {meta['sha256']}" for name, meta in files.items())
    return {"digest": hashlib.sha256(listing.encode()).hexdigest(), "files": files}


class Store(Protocol):
    def bundle_uri(self, digest: str) -> str: ...

    def get_manifest(self, digest: str) -> dict[str, Any] | None:
        """The committed manifest of a bundle, or None if it is absent or incomplete."""

    def put_bundle(
        self, local_dir: Path, manifest: dict[str, Any], progress: Progress | None = None
    ) -> list[StoredFile]: ...

    def delete_bundle(self, digest: str) -> None: ...

    def fetch(self, digest: str, names: list[str], dest: Path) -> Path:
        """Copy some files of a bundle (config, tokenizer) into a local directory."""


def _stored(store: Store, manifest: dict[str, Any]) -> list[StoredFile]:
    base = store.bundle_uri(manifest["digest"])
    return [
        StoredFile(name=name, uri=base + name, size=meta["size"], sha256=meta["sha256"])
        for name, meta in manifest["files"].items()
    ]


class LocalStore:
    """A directory; bundles appear by an atomic rename of a fully written temporary copy."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()

    def _dir(self, digest: str) -> Path:
        return self.root / "models" / digest

    def bundle_uri(self, digest: str) -> str:
        return str(self._dir(digest)) + "/"

    def get_manifest(self, digest: str) -> dict[str, Any] | None:
        path = self._dir(digest) / MANIFEST
        return json.loads(path.read_text()) if path.is_file() else None

    def put_bundle(
        self, local_dir: Path, manifest: dict[str, Any], progress: Progress | None = None
    ) -> list[StoredFile]:
        final = self._dir(manifest["digest"])
        if self.get_manifest(manifest["digest"]) is None:
            # An incomplete earlier attempt (no manifest) is replaced whole.
            with replacing_dir(final) as tmp:
                total = sum(m["size"] for m in manifest["files"].values())
                done = 0
                for name, meta in manifest["files"].items():
                    shutil.copyfile(local_dir / name, tmp / name)
                    if sha256_file(tmp / name) != meta["sha256"]:
                        raise TransientError(f"checksum mismatch copying {name} into the store")
                    done += meta["size"]
                    if progress:
                        progress(done, total)
                (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        return _stored(self, manifest)

    def delete_bundle(self, digest: str) -> None:
        shutil.rmtree(self._dir(digest), ignore_errors=True)

    def fetch(self, digest: str, names: list[str], dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copyfile(self._dir(digest) / name, dest / name)
        return dest


class S3Store:
    """An S3 bucket/prefix (AWS or any S3-compatible endpoint) through boto3."""

    PART_SIZE = 16 * 1024 * 1024
    PART_WORKERS = 4  # parts in flight (and in memory) at once
    MAX_PARTS = 10_000  # S3's limit per multipart upload
    MAX_ATTEMPTS = 5  # botocore's tries per request, before a part counts as failed
    CLEANUP_RETRIES = 4  # waits of 1, 2, 4 and 8 s for the endpoint to come back

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        region: str = "us-east-1",
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
            config=Config(
                retries={"max_attempts": self.MAX_ATTEMPTS, "mode": "standard"},
                # Every body paddock sends carries a checksum header the signature covers
                # and the server verifies (SHA-256 for bundle files, botocore's CRC32
                # otherwise), so SigV4 need not hash the body again — which botocore
                # does on plain-HTTP endpoints unless told so (on HTTPS it never does).
                s3={"payload_signing_enabled": False},
            ),
        )

    def _key(self, digest: str, name: str = "") -> str:
        return "/".join(p for p in (self.prefix, "models", digest, name) if p)

    def bundle_uri(self, digest: str) -> str:
        return f"s3://{self.bucket}/{self._key(digest)}/"

    def get_manifest(self, digest: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(digest, MANIFEST))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise TransientError(f"cannot read the model store: {exc}") from exc
        manifest: dict[str, Any] = json.loads(body["Body"].read())
        return manifest

    def put_bundle(
        self, local_dir: Path, manifest: dict[str, Any], progress: Progress | None = None
    ) -> list[StoredFile]:
        from botocore.exceptions import BotoCoreError, ClientError

        digest = manifest["digest"]
        if self.get_manifest(digest) is not None:
            return _stored(self, manifest)
        total = sum(m["size"] for m in manifest["files"].values())
        done = 0

        def _advance(n: int) -> None:
            nonlocal done
            done += n
            if progress:
                progress(done, total)

        written: list[str] = []
        earlier: dict[str, set[str]] = {}  # multipart uploads of a key begun before ours
        try:
            for name, meta in manifest["files"].items():
                key = self._key(digest, name)
                written.append(key)
                if meta["size"] >= self.PART_SIZE:
                    earlier[key] = self._uploads(key)
                    sent = self._put_parts(key, local_dir / name, meta, _advance)
                else:
                    sent = self._put_whole(key, local_dir / name, meta, _advance)
                self._verify(key, meta, sent)
            written.append(self._key(digest, MANIFEST))
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._key(digest, MANIFEST),
                Body=json.dumps(manifest, indent=1).encode(),
                ContentType="application/json",
            )
        except (BotoCoreError, ClientError, TransientError) as exc:
            left = self._clean_up(written, earlier)
            raise TransientError(f"upload to s3://{self.bucket} failed: {exc}{left}") from exc
        except BaseException:
            self._clean_up(written, earlier)
            raise
        return _stored(self, manifest)

    def _put_whole(
        self, key: str, path: Path, meta: dict[str, Any], advance: Callable[[int], None]
    ) -> str:
        """One request; returns the SHA-256 checksum S3 reports for the object (base64)."""
        body = path.read_bytes()
        whole = hashlib.sha256(body)
        if whole.hexdigest() != meta["sha256"]:
            raise TransientError(f"{path.name} changed after its manifest was made")
        checksum = base64.b64encode(whole.digest()).decode()
        self.client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=body,
            ChecksumSHA256=checksum,  # the server verifies it
            Metadata={"sha256": meta["sha256"]},
        )
        advance(len(body))
        return checksum

    def _put_parts(
        self, key: str, path: Path, meta: dict[str, Any], advance: Callable[[int], None]
    ) -> str:
        """A multipart upload that reads and hashes every byte once: each part's SHA-256
        is computed as it is read and sent for the server to verify (botocore's transfer
        manager would read and hash every part again). The manifest's digest of the whole
        file stands for what was read as long as the file did not change meanwhile: its
        size must be the manifest's, and its size and modification time the same after
        the last read as at the open (a second SHA-256 pass over the file would cost as
        much as the parts' own)."""
        from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

        upload_id = self.client.create_multipart_upload(
            Bucket=self.bucket,
            Key=key,
            ChecksumAlgorithm="SHA256",
            Metadata={"sha256": meta["sha256"]},
        )["UploadId"]
        checksums: list[str] = []
        etags: dict[int, str] = {}

        def put(number: int, block: bytes, checksum: str) -> int:
            reply = self.client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=block,
                ChecksumSHA256=checksum,
            )
            etags[number] = reply["ETag"]
            return len(block)

        part_size = self.part_size(meta["size"])
        with ThreadPoolExecutor(self.PART_WORKERS) as pool, path.open("rb") as fh:
            opened = _stamp(fh.fileno())
            if opened[0] != meta["size"]:
                raise TransientError(f"{path.name} changed after its manifest was made")
            pending: set[Future[int]] = set()
            while block := fh.read(part_size):
                checksums.append(_b64sha256(block))
                if len(pending) >= self.PART_WORKERS:  # at most this many parts in memory
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for part in finished:
                        advance(part.result())
                pending.add(pool.submit(put, len(checksums), block, checksums[-1]))
            for part in pending:
                advance(part.result())
            if _stamp(fh.fileno()) != opened:
                raise TransientError(f"{path.name} changed while it was being uploaded")
        self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={
                "Parts": [
                    {"PartNumber": n, "ETag": etags[n], "ChecksumSHA256": c}
                    for n, c in enumerate(checksums, start=1)
                ]
            },
        )
        return _of_parts(checksums)  # what S3 reports for a multipart object

    def _clean_up(self, keys: list[str], earlier: dict[str, set[str]]) -> str:
        """Take back what a failed attempt wrote: its objects, and the multipart uploads
        it began (their parts are stored, and billed, until aborted; an abort sent at
        once fails when the endpoint is the thing that went away). Waits
        out a short outage under the retry policy; returns what could not be cleaned."""
        policy = RetryPolicy(retries=self.CLEANUP_RETRIES, base_seconds=1.0, max_seconds=8.0)
        try:
            policy.call(lambda: self._abort_uploads(earlier), what="abort multipart uploads")
            policy.call(lambda: self._delete_keys(keys), what="delete a failed upload")
        except Exception as exc:  # the original failure is what the caller must see
            return f" (and its clean-up failed too: {exc})"
        return ""

    def _uploads(self, key: str) -> set[str]:
        listing = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
        return {u["UploadId"] for u in listing.get("Uploads", []) if u["Key"] == key}

    def _abort_uploads(self, earlier: dict[str, set[str]]) -> None:
        """Abort the multipart uploads this attempt began: those of its keys that were
        not there before it (an identical bundle's upload, begun by another run under the
        same content-addressed key, is that run's to finish)."""
        for key, before in earlier.items():
            for upload_id in self._uploads(key) - before:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)

    def part_size(self, size: int) -> int:
        """``PART_SIZE``, or larger (whole MiB) when a file would need more parts than
        S3 allows."""
        mib = 1024 * 1024
        needed = -(-size // self.MAX_PARTS)
        return max(self.PART_SIZE, -(-needed // mib) * mib)

    def _verify(self, key: str, meta: dict[str, Any], sent: str) -> None:
        """What the server holds is what was sent (``sent``: its SHA-256 checksum, whole or
        of the parts' checksums); the senders have checked that what they sent is what the
        manifest describes."""
        head = self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        served = (head.get("ChecksumSHA256") or "").split("-")[0]  # "<b64>-<parts>" on AWS
        if head["ContentLength"] != meta["size"] or (served and served != sent):
            raise TransientError(f"s3://{self.bucket}/{key} does not match what was sent")

    def _delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            if chunk:
                self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in chunk]}
                )

    def delete_bundle(self, digest: str) -> None:
        prefix = self._key(digest) + "/"
        paginator = self.client.get_paginator("list_objects_v2")
        keys = [
            obj["Key"]
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        ]
        self._delete_keys(keys)

    def fetch(self, digest: str, names: list[str], dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        for name in names:
            self.client.download_file(self.bucket, self._key(digest, name), str(dest / name))
        return dest


def _stamp(fd: int) -> tuple[int, int]:
    """An open file's size and modification time: a write to it changes one of them."""
    st = os.fstat(fd)
    return st.st_size, st.st_mtime_ns


def _b64sha256(block: bytes) -> str:
    return base64.b64encode(hashlib.sha256(block).digest()).decode()


def _of_parts(checksums: list[str]) -> str:
    joined = b"".join(base64.b64decode(c) for c in checksums)
    return base64.b64encode(hashlib.sha256(joined).digest()).decode()


def open_store(url: str, **s3_options: Any) -> Store:
    """`s3://bucket/prefix` opens an S3Store; anything else is a local directory."""
    if url.startswith("s3://"):
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not bucket:
            raise PaddockError(f"store URL {url!r} names no bucket")
        return S3Store(bucket, prefix, **s3_options)
    return LocalStore(Path(url))
