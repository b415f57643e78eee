"""Fetching a submission's files from where its developer keeps them.

Three kinds of source: a hub repository id (`org/name`), an S3 prefix (`s3://bucket/dir`)
and a local directory (only under the operator's allowed roots — a submission must not be
able to make the platform read `/etc`). Each resolves the requested revision to something
immutable (a commit sha, or a content hash) and fetches only the files serving needs, while
listing *all* files so the sanity stage can see custom code and pickle weights.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from paddock.bundle import SIDE_FILES
from paddock.contracts import Snapshot
from paddock.errors import Rejected, TransientError
from paddock.storage import sha256_file

if TYPE_CHECKING:
    from huggingface_hub import HfApi

__all__ = ["NEEDED", "PICKLE", "classify", "fetch_hub", "fetch_s3", "fetch_local"]

# What vLLM needs to serve a model (and the sanity stage needs to check it).
NEEDED = ["*.safetensors", "*.safetensors.index.json", *SIDE_FILES]
PICKLE = ["*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def classify(source: str) -> str:
    if source.startswith("s3://"):
        return "s3"
    if source.startswith(("/", "./", "../", "~")) or Path(source).is_dir():
        return "local"
    if _HUB_ID.match(source):
        return "hub"
    raise Rejected(
        f"source {source!r} is neither a hub repository id (org/name), an s3:// URL "
        "nor a directory path"
    )


def _wanted(name: str, patterns: list[str]) -> bool:
    base = name.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(base, p) for p in patterns) and "/" not in name.strip("/")


def fetch_hub(
    repo_id: str,
    revision: str | None,
    dest: Path,
    *,
    endpoint: str | None,
    token: str | None,
    patterns: list[str],
    max_bytes: int,
) -> Snapshot:
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    api = HfApi(endpoint=endpoint, token=token)
    where = endpoint or "huggingface.co"
    try:
        # An explicit "main" rather than None: mirrors resolve the bare form upstream.
        info = api.model_info(repo_id, revision=revision or "main", files_metadata=True)
    except RevisionNotFoundError as exc:
        raise Rejected(f"revision {revision!r} does not exist in {repo_id} on {where}") from exc
    except GatedRepoError as exc:
        raise Rejected(f"{repo_id} is gated: accept its terms and submit with a token") from exc
    except RepositoryNotFoundError as exc:
        # Some hubs (olah mirrors among them) answer an unknown revision as an unknown
        # repository: ask once more without the revision to tell the developer which.
        if revision is not None and _exists(api, repo_id):
            raise Rejected(f"revision {revision!r} does not exist in {repo_id} on {where}") from exc
        raise Rejected(
            f"repository {repo_id} was not found on {where} (or it is private and no token "
            "was given)"
        ) from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status is not None and 400 <= status < 500 and status != 429:
            raise Rejected(f"{where} refused {repo_id}@{revision or 'main'}: {exc}") from exc
        raise TransientError(f"{where} failed for {repo_id}: {exc}") from exc
    except OSError as exc:  # connection errors
        raise TransientError(f"cannot reach {where}: {exc}") from exc
    sha = info.sha
    if not sha:
        raise TransientError(f"{where} did not resolve {repo_id}@{revision} to a commit")
    files = [s.rfilename for s in info.siblings or []]
    weight_bytes = sum(
        (s.size or 0) for s in info.siblings or [] if _wanted(s.rfilename, ["*.safetensors"])
    )
    if weight_bytes > max_bytes:
        raise Rejected(
            f"{repo_id} has {weight_bytes / 1e9:.1f} GB of weights; the limit is "
            f"{max_bytes / 1e9:.1f} GB"
        )
    wanted = [f for f in files if _wanted(f, patterns)]
    try:
        snapshot_download(
            repo_id,
            revision=sha,
            allow_patterns=wanted,
            local_dir=dest,
            endpoint=endpoint,
            token=token,
        )
    except (HfHubHTTPError, OSError) as exc:
        raise TransientError(f"download of {repo_id}@{sha[:12]} failed: {exc}") from exc
    return _snapshot(dest, sha, files)


def _exists(api: HfApi, repo_id: str) -> bool:
    try:
        api.list_repo_refs(repo_id)
    except Exception:
        return False
    return True


def fetch_s3(
    url: str,
    dest: Path,
    *,
    endpoint_url: str | None,
    access_key_id: str | None,
    secret_access_key: str | None,
    patterns: list[str],
) -> Snapshot:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

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
        ]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket", "AccessDenied", "403", "404"):
            raise Rejected(f"cannot list {url}: {code}") from exc
        raise TransientError(f"cannot list {url}: {exc}") from exc
    except BotoCoreError as exc:
        raise TransientError(f"cannot reach S3 for {url}: {exc}") from exc
    if not objects:
        raise Rejected(f"{url} holds no files")
    files = sorted(obj["Key"][len(prefix) :] for obj in objects)
    digest = hashlib.sha256(
        "\n".join(
            f"{o['Key']} {o['ETag']}" for o in sorted(objects, key=lambda o: o["Key"])
        ).encode()
    )
    dest.mkdir(parents=True, exist_ok=True)
    for name in files:
        if _wanted(name, patterns):
            client.download_file(bucket, prefix + name, str(dest / name))
    return _snapshot(dest, "s3-" + digest.hexdigest()[:40], files)


def fetch_local(
    path: str, dest: Path, *, allowed_roots: list[Path], patterns: list[str]
) -> Snapshot:
    src = Path(path).expanduser().resolve()  # resolves symlinks: no escaping the roots
    if not any(src == root or root in src.parents for root in allowed_roots):
        roots = ", ".join(str(r) for r in allowed_roots)
        raise Rejected(
            f"{src} is outside the directories local submissions may come from ({roots}); "
            "ask an operator to add it to PADDOCK_ALLOWED_SOURCE_DIRS or upload the model to a hub"
        )
    if not src.is_dir():
        raise Rejected(f"{src} is not a directory")
    files = sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    dest.mkdir(parents=True, exist_ok=True)
    for name in files:
        if _wanted(name, patterns):
            shutil.copyfile(src / name, dest / name)
    for name in sorted(p.name for p in dest.iterdir()):
        digest.update(f"{name} {sha256_file(dest / name)}\n".encode())
    return _snapshot(dest, "sha256-" + digest.hexdigest()[:40], files)


def _snapshot(dest: Path, revision: str, files: list[str]) -> Snapshot:
    fetched = sum(p.stat().st_size for p in dest.iterdir() if p.is_file())
    return Snapshot(path=dest, revision=revision, files=tuple(files), bytes=fetched)
