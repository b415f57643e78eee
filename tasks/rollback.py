"""Undoing a failed run: stop what it deployed and take back what it uploaded.

The flow calls this once a failure is final — after the failing stage has used up its
retries — never on a first failed attempt, so a retried stage keeps the deployment the
next attempt needs. A bundle is taken back only if this submission's upload created it:
bundles are content-addressed, and an identical submission may be serving the same one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect import task

from blocks import model_store
from paddock import crud
from paddock.contracts import StoredBundle
from paddock.serving import stop_serving

__all__ = ["roll_back", "undone_on_failure"]


@task(name="roll-back")
def roll_back(submission_id: str) -> None:
    stop_serving(submission_id)
    upload = crud.last_success(submission_id=submission_id, stage="upload")
    if upload is None or "output" not in upload.detail:
        return
    stored = StoredBundle.model_validate(upload.detail["output"])
    if stored.created:
        model_store().open().delete_bundle(stored.digest)
        crud.delete_artifacts(submission_id=submission_id)


@contextmanager
def undone_on_failure(submission_id: str) -> Iterator[None]:
    """Roll the submission back if the block raises; the failure still propagates."""
    try:
        yield
    except BaseException:
        roll_back(submission_id)
        raise
