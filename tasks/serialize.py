"""Stage 3: write the tensorizer bundle."""

from __future__ import annotations

from paddock.bundle import work_bundle_dir, write_bundle
from paddock.contracts import Bundle, Snapshot
from tasks.stage import stage

__all__ = ["serialize"]


def _present(submission_id: str, bundle: Bundle) -> bool:
    return (bundle.path / "model.tensors").is_file()


@stage("serialize", retries=1, still_valid=_present)
def serialize(submission_id: str, snapshot: Snapshot) -> Bundle:
    return write_bundle(snapshot.path, work_bundle_dir(submission_id))
