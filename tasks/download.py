"""Stage 1: fetch the submission at an immutable revision."""

from __future__ import annotations

import shutil

from blocks import model_source
from paddock import crud
from paddock.config import get_settings
from paddock.contracts import Snapshot
from paddock.sources import NEEDED, PICKLE, classify, fetch_hub, fetch_local, fetch_s3
from tasks.stage import stage

__all__ = ["download"]


def _present(submission_id: str, snapshot: Snapshot) -> bool:
    return snapshot.path.is_dir() and (snapshot.path / "config.json").exists()


@stage("download", still_valid=_present)
def download(submission_id: str) -> Snapshot:
    """Fetch only the files serving needs, listing every file so sanity sees them all."""
    settings = get_settings()
    sub = crud.require_submission(submission_id=submission_id)
    dest = settings.work_dir / submission_id / "source"
    shutil.rmtree(dest, ignore_errors=True)  # never mix files of two attempts
    patterns = NEEDED + (PICKLE if settings.allow_pickle else [])
    kind = classify(sub.source)
    src = model_source()
    if kind == "hub":
        snapshot = fetch_hub(
            sub.source,
            sub.requested_revision,
            dest,
            endpoint=src.endpoint,
            token=src.token.get_secret_value() if src.token else None,
            patterns=patterns,
            max_bytes=settings.max_model_bytes,
        )
    elif kind == "s3":
        snapshot = fetch_s3(
            sub.source,
            dest,
            endpoint_url=src.s3_endpoint_url,
            access_key_id=src.s3_access_key_id,
            secret_access_key=(
                src.s3_secret_access_key.get_secret_value() if src.s3_secret_access_key else None
            ),
            patterns=patterns,
        )
    else:
        snapshot = fetch_local(
            sub.source, dest, allowed_roots=settings.source_roots, patterns=patterns
        )
    crud.set_resolved_revision(submission_id=submission_id, revision=snapshot.revision)
    return snapshot
