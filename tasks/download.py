"""Stage 1: fetch the submission at an immutable revision."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from blocks import model_source
from paddock import crud
from paddock.config import get_settings
from paddock.sources import NEEDED, PICKLE, classify, fetch_hub, fetch_local, fetch_s3
from tasks.stage import stage

__all__ = ["download"]


def _present(submission_id: str, output: dict[str, Any]) -> bool:
    path = Path(output.get("path", ""))
    return path.is_dir() and (path / "config.json").exists()


@stage("download", still_valid=_present)
def download(submission_id: str) -> dict[str, Any]:
    settings = get_settings()
    sub = crud.require_submission(submission_id=submission_id)
    dest = settings.work_dir / submission_id / "source"
    shutil.rmtree(dest, ignore_errors=True)  # never mix files of two attempts
    patterns = NEEDED + (PICKLE if settings.allow_pickle else [])
    kind = classify(sub.source)
    src = model_source()
    if kind == "hub":
        snap = fetch_hub(
            sub.source,
            sub.requested_revision,
            dest,
            endpoint=src.endpoint,
            token=src.token.get_secret_value() if src.token else None,
            patterns=patterns,
            max_bytes=settings.max_model_bytes,
        )
    elif kind == "s3":
        snap = fetch_s3(
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
        snap = fetch_local(sub.source, dest, allowed_roots=settings.source_roots, patterns=patterns)
    crud.set_resolved_revision(submission_id=submission_id, revision=snap.revision)
    size = sum(p.stat().st_size for p in snap.path.iterdir() if p.is_file())
    return {"path": str(snap.path), "revision": snap.revision, "files": snap.files, "bytes": size}
