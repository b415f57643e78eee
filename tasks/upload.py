"""Stage 4: put the bundle in the model store, content-addressed and verified.

`upload` is the stage on the main line, before a deploy whose server reads the store.
`upload_beside` is the same work run beside deploy when the server maps the bundle this
run serialized rather than streaming it from S3 (a local server): deploy and warm-up
move the status, and the flow joins the upload before the stress gate, so that none of
its load is in the gate's figures and nothing is published that is not stored.
"""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from blocks import model_store
from paddock import crud
from paddock.contracts import Bundle, StoredBundle
from paddock.storage import bundle_manifest
from tasks.stage import stage

__all__ = ["upload", "upload_beside"]


def _in_store(submission_id: str, stored: StoredBundle) -> bool:
    """Still stored, and still this submission's: a rollback releases its reference
    (artifact rows) even when another submission keeps the bundle alive, and a resumed
    run must take the reference again rather than serve a bundle it does not hold."""
    if not crud.list_artifacts(submission_id=submission_id):
        return False
    return model_store().open().get_manifest(stored.digest) is not None


def _progress_reporter(submission_id: str) -> Callable[[int, int], None]:
    """Upload progress as a Prefect progress artifact, updated every 5 %."""
    artifact_id = create_progress_artifact(
        progress=0.0, key=f"upload-{submission_id}", description="Upload to the model store"
    )
    shown = 0.0

    def report(done: int, total: int) -> None:
        nonlocal shown
        pct = 100.0 * done / max(total, 1)
        if pct - shown >= 5 or done >= total:
            shown = pct
            if isinstance(artifact_id, UUID):  # always, in a sync task
                update_progress_artifact(artifact_id=artifact_id, progress=pct)

    return report


def _upload(submission_id: str, bundle: Bundle) -> StoredBundle:
    store = model_store().open()
    manifest = bundle_manifest(bundle.path)
    created = store.get_manifest(manifest["digest"]) is None
    stored = store.put_bundle(bundle.path, manifest, _progress_reporter(submission_id))
    crud.add_artifacts(
        submission_id=submission_id, artifacts=[(f.uri, f.size, f.sha256) for f in stored]
    )
    return StoredBundle(
        digest=manifest["digest"],
        uri=store.bundle_uri(manifest["digest"]),
        files=tuple(sorted(manifest["files"])),
        bytes=sum(f.size for f in stored),
        created=created,
    )


upload = stage("upload", still_valid=_in_store)(_upload)
upload_beside = stage("upload", still_valid=_in_store, moves_status=False)(_upload)
