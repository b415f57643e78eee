"""Stage 4: put the bundle in the model store, content-addressed and verified."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.transactions import Transaction

from blocks import model_store
from paddock import crud
from paddock.storage import bundle_manifest
from tasks.stage import stage

__all__ = ["upload"]


def _in_store(submission_id: str, output: dict[str, Any]) -> bool:
    return model_store().open().get_manifest(output.get("digest", "")) is not None


def _progress_reporter(submission_id: str) -> Any:
    artifact_id = create_progress_artifact(
        progress=0.0, key=f"upload-{submission_id}", description="Upload to the model store"
    )
    shown = 0.0

    def report(done: int, total: int) -> None:
        nonlocal shown
        pct = 100.0 * done / max(total, 1)
        if pct - shown >= 5 or done >= total:
            shown = pct
            update_progress_artifact(artifact_id=artifact_id, progress=pct)

    return report


@stage("upload", still_valid=_in_store)
def upload(submission_id: str, bundle: dict[str, Any]) -> dict[str, Any]:
    store = model_store().open()
    manifest = bundle_manifest(Path(bundle["path"]))
    created = store.get_manifest(manifest["digest"]) is None
    stored = store.put_bundle(Path(bundle["path"]), manifest, _progress_reporter(submission_id))
    crud.add_artifacts(
        submission_id=submission_id, artifacts=[(f.uri, f.size, f.sha256) for f in stored]
    )
    return {
        "digest": manifest["digest"],
        "uri": store.bundle_uri(manifest["digest"]),
        "files": sorted(manifest["files"]),
        "bytes": sum(f.size for f in stored),
        "created": created,
    }


@upload.on_rollback
def _remove_upload(txn: Transaction) -> None:
    """A later stage failed: take back the bundle if this run put it there."""
    submission_id = txn.get("submission_id")
    output = crud.last_success(submission_id=submission_id, stage="upload") or None
    if output is None or not output.detail.get("output", {}).get("created"):
        return
    model_store().open().delete_bundle(output.detail["output"]["digest"])
    crud.delete_artifacts(submission_id=submission_id)
