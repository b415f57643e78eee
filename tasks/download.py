"""Stage 1: fetch the submission at an immutable revision.

The submission is validated again before anything is fetched: a recorded row may predate
today's rules (or reach the flow without passing the submit checks), and its source and
revision go into URLs and paths. A download that fails leaves no files behind.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from blocks import model_source
from paddock import crud
from paddock.config import Settings, get_settings
from paddock.contracts import Snapshot
from paddock.models import Submission
from paddock.params import validate_params
from paddock.sources import (
    NEEDED,
    PICKLE,
    FetchPolicy,
    check_revision,
    classify,
    fetch_hub,
    fetch_local,
    fetch_s3,
)
from tasks.stage import stage

__all__ = ["download", "discard_work"]


def _present(submission_id: str, snapshot: Snapshot) -> bool:
    return snapshot.path.is_dir() and (snapshot.path / "config.json").exists()


def discard_work(work: Path, files: Path) -> None:
    """Remove ``files`` and then the submission's work dir if nothing else is in it."""
    shutil.rmtree(files, ignore_errors=True)
    try:
        work.rmdir()
    except OSError:
        pass  # another stage's output (a bundle) is still there, or it is already gone


@stage("download", still_valid=_present)
def download(submission_id: str) -> Snapshot:
    """Fetch only the files serving needs, listing every file so sanity sees them all."""
    settings = get_settings()
    sub = crud.require_submission(submission_id=submission_id)
    work = settings.work_dir / submission_id
    dest = work / "source"
    shutil.rmtree(dest, ignore_errors=True)  # never mix files of two attempts
    try:
        snapshot = _fetch(sub, dest, settings)
    except BaseException:
        discard_work(work, dest)
        raise
    crud.set_resolved_revision(submission_id=submission_id, revision=snapshot.revision)
    return snapshot


def _fetch(sub: Submission, dest: Path, settings: Settings) -> Snapshot:
    kind = classify(sub.source)
    check_revision(sub.requested_revision)
    validate_params(sub.generation_params or {})
    policy = FetchPolicy(
        patterns=NEEDED + (PICKLE if settings.allow_pickle else []),
        max_bytes=settings.max_model_bytes,
        allow_custom_code=settings.allow_custom_code,
        allow_pickle=settings.allow_pickle,
    )
    src = model_source()
    if kind == "hub":
        return fetch_hub(
            sub.source,
            sub.requested_revision,
            dest,
            endpoint=src.endpoint,
            token=src.token.get_secret_value() if src.token else None,
            policy=policy,
        )
    if kind == "s3":
        return fetch_s3(
            sub.source,
            dest,
            endpoint_url=src.s3_endpoint_url,
            access_key_id=src.s3_access_key_id,
            secret_access_key=(
                src.s3_secret_access_key.get_secret_value() if src.s3_secret_access_key else None
            ),
            policy=policy,
        )
    return fetch_local(sub.source, dest, allowed_roots=settings.source_roots, policy=policy)
