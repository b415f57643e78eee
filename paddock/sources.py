"""Fetching a submission's files from where its developer keeps them.

Three kinds of source: a hub repository id (`org/name`), an S3 prefix (`s3://bucket/dir`)
and a local directory (only under the operator's allowed roots — a submission must not be
able to make the platform read `/etc`). Source strings and revisions are strangers' text
that ends up in URLs and paths, so they are held to strict shapes before use.

Each source is first *listed* (names and sizes): the listing checks in
``paddock.checks.files`` refuse unsafe names, custom code, pickle files, missing
essentials and oversized models before anything is fetched. Then only the files serving
needs are fetched, pinned to what was listed: a hub revision is resolved to a commit sha and
every file is downloaded by that sha (a branch moved meanwhile changes nothing), S3 objects
are fetched only if their ETag is still the listed one, and local files are copied without
following links, then hashed.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paddock.checks import files as _files
from paddock.checks.files import SourceFile, check_fetched, check_listing, walk_local
from paddock.contracts import Snapshot
from paddock.errors import Rejected, TransientError
from paddock.storage import sha256_file
from paddock.transfers import HubFile, download_resuming, verify_hub_files

if TYPE_CHECKING:
    from huggingface_hub import HfApi

__all__ = [
    "HUB_CHUNK_BYTES",
    "NEEDED",
    "PICKLE",
    "FetchPolicy",
    "classify",
    "check_revision",
    "fetch_hub",
    "fetch_s3",
    "fetch_local",
]

NEEDED = list(_files.NEEDED)
PICKLE = list(_files.PICKLE)

_HUB_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?"
_HUB_ID = re.compile(rf"(?:{_HUB_PART}/)?{_HUB_PART}", re.ASCII)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", re.ASCII)
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,254}", re.ASCII)
_SHA = re.compile(r"[0-9a-f]{40}", re.ASCII)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FetchPolicy:
    """What a fetch may bring in: the names serving needs, and the operator's limits."""

    patterns: Sequence[str]
    max_bytes: int
    allow_custom_code: bool = False
    allow_pickle: bool = False

    def check(self, listing: Sequence[SourceFile]) -> list[str]:
        return check_listing(
            listing,
            patterns=self.patterns,
            allow_custom_code=self.allow_custom_code,
            allow_pickle=self.allow_pickle,
            max_bytes=self.max_bytes,
        )


def _shown(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def classify(source: str) -> str:
    """``hub``, ``s3`` or ``local``; refuses anything else, and every malformed one."""
    if _control(source):
        raise Rejected(
            f"source {_shown(source)} contains control characters (such as NUL or a newline); "
            "type the repository id, s3:// URL or directory path again"
        )
    if source.startswith("s3://"):
        bucket, _, prefix = source[len("s3://") :].partition("/")
        parts = prefix.strip("/").split("/") if prefix.strip("/") else []
        if not _BUCKET.fullmatch(bucket) or any(p in ("", ".", "..") for p in parts):
            raise Rejected(
                f"source {_shown(source)} is not a valid s3://bucket/prefix URL (a lowercase "
                "bucket name, then a prefix without '..' or empty parts)"
            )
        return "s3"
    if source.startswith(("/", "~")):
        if any(part == ".." for part in source.split("/")):
            raise Rejected(
                f"source {_shown(source)} climbs with '..'; give the model directory's "
                "full path without '..'"
            )
        return "local"
    if source.startswith("."):
        raise Rejected(
            f"source {_shown(source)} is neither a hub repository id (org/name) nor an "
            "absolute directory path; local sources must be given as full paths such as "
            "/data/models/my-model"
        )
    if _HUB_ID.fullmatch(source) and ".." not in source and "--" not in source:
        return "hub"
    raise Rejected(
        f"source {_shown(source)} is neither a hub repository id (org/name, made of letters, "
        "digits, '-', '_' and '.'), an s3://bucket/prefix URL nor an absolute directory path; "
        "check it for typos"
    )


def check_revision(revision: str | None) -> None:
    """Refuse revisions that are not plausible branch, tag or commit names."""
    if revision is None:
        return
    if (
        not _REVISION.fullmatch(revision)
        or ".." in revision
        or "//" in revision
        or "/." in revision
        or revision.endswith(("/", ".", ".lock"))
    ):
        raise Rejected(
            f"revision {_shown(revision)} is not a branch, tag or commit sha (letters, digits, "
            "'.', '_', '-' and '/', no '..'); give it as the hub shows it"
        )


# -- hub ------------------------------------------------------------------------------


@contextmanager
def _hub_errors(api: HfApi, repo_id: str, revision: str | None, where: str) -> Iterator[None]:
    """Hub client errors as paddock's: the developer's (Rejected) or passing (Transient)."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except RevisionNotFoundError as exc:
        raise Rejected(
            f"revision {revision!r} does not exist in {repo_id} on {where}; give an existing "
            "branch, tag or commit"
        ) from exc
    except GatedRepoError as exc:
        raise Rejected(
            f"{repo_id} is gated on {where}: accept its terms with the account whose token "
            "paddock uses, or submit an ungated copy"
        ) from exc
    except RepositoryNotFoundError as exc:
        # Some hubs (olah mirrors among them) answer an unknown revision as an unknown
        # repository: ask once more without the revision to tell the developer which.
        if revision is not None and _exists(api, repo_id):
            raise Rejected(
                f"revision {revision!r} does not exist in {repo_id} on {where}; give an "
                "existing branch, tag or commit"
            ) from exc
        raise Rejected(
            f"repository {repo_id} was not found on {where}: check its name, or if it is "
            "private, ask an operator to give paddock a hub token that can read it"
        ) from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status is not None and 400 <= status < 500 and status not in (408, 429):
            raise Rejected(
                f"{where} refused {repo_id}@{revision or 'main'} ({status}); check the "
                "repository id and revision"
            ) from exc
        raise TransientError(f"{where} failed for {repo_id}: {exc}") from exc
    except OSError as exc:  # connection errors
        raise TransientError(f"cannot reach {where}: {exc}") from exc


def _exists(api: HfApi, repo_id: str) -> bool:
    try:
        api.list_repo_refs(repo_id)
    except Exception:
        return False
    return True


def _resolve(api: HfApi, repo_id: str, revision: str | None) -> str:
    # An explicit "main" rather than None: mirrors resolve the bare form upstream.
    info = api.model_info(repo_id, revision=revision or "main")
    return info.sha or ""


def _hub_listing(tree: Sequence[HubFile]) -> list[SourceFile]:
    """What the listing checks see of the hub's tree: names and sizes."""
    return [SourceFile(name=f.name, size=f.size) for f in tree]


def _hub_tree(api: HfApi, repo_id: str, sha: str) -> list[HubFile]:
    from huggingface_hub.hf_api import RepoFile

    return [
        HubFile(
            name=entry.path,
            size=entry.size,
            sha256=entry.lfs.sha256 if entry.lfs is not None else None,
            blob_id=entry.blob_id or None,
        )
        for entry in api.list_repo_tree(repo_id, revision=sha, recursive=True)
        if isinstance(entry, RepoFile)
    ]


# huggingface_hub re-cuts every response body into pieces of its DOWNLOAD_CHUNK_SIZE
# through a BytesIO before writing them. At its 10 MiB default that took SmolLM2's 538 MB
# 2.4 s of the client's CPU and 3.4 s of wall from a local mirror; at 1 MiB, 0.9 and 1.9 s
# (256 KiB is no faster). The client reads the value at each download.
HUB_CHUNK_BYTES = 1 << 20


def _download_pinned(
    repo_id: str, sha: str, names: list[str], dest: Path, *, endpoint: str | None, token: str | None
) -> None:
    """Download exactly ``names`` at commit ``sha`` (never a branch: it may move)."""
    from huggingface_hub import constants, snapshot_download

    constants.DOWNLOAD_CHUNK_SIZE = HUB_CHUNK_BYTES
    snapshot_download(
        repo_id,
        revision=sha,
        allow_patterns=[glob.escape(n) for n in names],
        local_dir=dest,
        endpoint=endpoint,
        token=token,
    )


def fetch_hub(
    repo_id: str,
    revision: str | None,
    dest: Path,
    *,
    endpoint: str | None,
    token: str | None,
    policy: FetchPolicy,
) -> Snapshot:
    from huggingface_hub import HfApi

    if classify(repo_id) != "hub":
        raise Rejected(f"{_shown(repo_id)} is not a hub repository id (org/name)")
    check_revision(revision)
    api = HfApi(endpoint=endpoint, token=token)
    where = endpoint or "huggingface.co"
    with _hub_errors(api, repo_id, revision, where):
        sha = _resolve(api, repo_id, revision)
    if not _SHA.fullmatch(sha):
        raise TransientError(f"{where} did not resolve {repo_id}@{revision} to a commit")
    with _hub_errors(api, repo_id, sha, where):
        hub_files = _hub_tree(api, repo_id, sha)
    listing = _hub_listing(hub_files)
    wanted = policy.check(listing)

    def attempt() -> None:
        with _hub_errors(api, repo_id, sha, where):
            _download_pinned(repo_id, sha, wanted, dest, endpoint=endpoint, token=token)

    download_resuming(attempt, where=where)
    shutil.rmtree(dest / ".cache", ignore_errors=True)  # the hub client's bookkeeping
    verify_hub_files(dest, hub_files, where)
    check_fetched(dest, max_bytes=policy.max_bytes)
    return _snapshot(dest, sha, [f.name for f in listing])


# -- S3 -------------------------------------------------------------------------------


def fetch_s3(
    url: str,
    dest: Path,
    *,
    endpoint_url: str | None,
    access_key_id: str | None,
    secret_access_key: str | None,
    policy: FetchPolicy,
) -> Snapshot:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    if classify(url) != "s3":
        raise Rejected(f"{_shown(url)} is not an s3://bucket/prefix URL")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    client = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
    )
    try:
        objects = [
            obj
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            )
            for obj in page.get("Contents", [])
            if not (obj["Key"].endswith("/") and obj.get("Size", 0) == 0)  # folder markers
        ]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket", "AccessDenied", "403", "404"):
            raise Rejected(
                f"cannot list {url} ({code}); check the URL, or ask an operator to give "
                "paddock's S3 keys read access to it"
            ) from exc
        raise TransientError(f"cannot list {url}: {exc}") from exc
    except BotoCoreError as exc:
        raise TransientError(f"cannot reach S3 for {url}: {exc}") from exc
    if not objects:
        raise Rejected(f"{url} holds no files; check the URL")
    listing = [SourceFile(name=o["Key"][len(prefix) :], size=int(o["Size"])) for o in objects]
    wanted = policy.check(listing)
    etags = {o["Key"][len(prefix) :]: str(o["ETag"]) for o in objects}
    digest = hashlib.sha256("\n".join(f"{name} {etags[name]}" for name in sorted(etags)).encode())
    dest.mkdir(parents=True, exist_ok=True)
    for name in wanted:
        _s3_get(client, bucket, prefix + name, etags[name], dest / name)
    check_fetched(dest, max_bytes=policy.max_bytes)
    return _snapshot(dest, "s3-" + digest.hexdigest()[:40], sorted(f.name for f in listing))


def _s3_get(client: Any, bucket: str, key: str, etag: str, target: Path) -> None:
    """Fetch ``key`` only as it was listed (If-Match on its ETag)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        body = client.get_object(Bucket=bucket, Key=key, IfMatch=etag)["Body"]
        with target.open("xb") as out:
            for chunk in body.iter_chunks(_CHUNK):
                out.write(chunk)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("PreconditionFailed", "412", "NoSuchKey"):
            raise TransientError(
                f"s3://{bucket}/{key} changed while it was downloaded; fetching again"
            ) from exc
        raise TransientError(f"cannot fetch s3://{bucket}/{key}: {exc}") from exc
    except BotoCoreError as exc:
        raise TransientError(f"cannot fetch s3://{bucket}/{key}: {exc}") from exc


# -- local ----------------------------------------------------------------------------


def fetch_local(
    path: str, dest: Path, *, allowed_roots: list[Path], policy: FetchPolicy
) -> Snapshot:
    if classify(path) != "local":
        raise Rejected(f"{_shown(path)} is not an absolute directory path")
    src = Path(path).expanduser().resolve()  # resolves symlinks: no escaping the roots
    if not any(src == root or root in src.parents for root in allowed_roots):
        roots = ", ".join(str(r) for r in allowed_roots)
        raise Rejected(
            f"{src} is outside the directories local submissions may come from ({roots}); "
            "ask an operator to add it to PADDOCK_ALLOWED_SOURCE_DIRS or upload the model to a hub"
        )
    if not src.is_dir():
        raise Rejected(f"{src} is not a directory; give the model directory's path")
    listing = walk_local(src)
    wanted = policy.check(listing)
    dest.mkdir(parents=True, exist_ok=True)
    for name in wanted:
        _copy_no_follow(src / name, dest / name, name)
    check_fetched(dest, max_bytes=policy.max_bytes)
    digest = hashlib.sha256()
    for name in sorted(p.name for p in dest.iterdir()):
        digest.update(f"{name} {sha256_file(dest / name)}\n".encode())
    return _snapshot(dest, "sha256-" + digest.hexdigest()[:40], [f.name for f in listing])


def _copy_no_follow(src: Path, target: Path, name: str) -> None:
    """Copy a regular file, refusing one that became a link or a FIFO since the walk."""
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise Rejected(
            f"{name} could not be opened without following a link ({exc.strerror}); replace "
            "links with the files themselves and submit again"
        ) from exc
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise Rejected(f"{name} is not a regular file; remove it and submit again")
        with target.open("xb") as out:
            shutil.copyfileobj(fh, out, _CHUNK)


def _snapshot(dest: Path, revision: str, files: list[str]) -> Snapshot:
    fetched = sum(p.stat().st_size for p in dest.iterdir() if p.is_file())
    return Snapshot(path=dest, revision=revision, files=tuple(files), bytes=fetched)
