"""Stage 2: refuse broken or hostile models; record the greedy reference for parity."""

from __future__ import annotations

from paddock import crud
from paddock.checks import runtime_checks, static_checks
from paddock.config import get_settings
from paddock.contracts import Checked, Snapshot
from tasks.stage import stage

__all__ = ["sanity"]


def _has_reference(submission_id: str, checked: Checked) -> bool:
    sub = crud.get_submission(submission_id=submission_id)
    return sub is not None and bool(sub.reference)


@stage("sanity", retries=0, still_valid=_has_reference)
def sanity(submission_id: str, snapshot: Snapshot) -> Checked:
    """Static checks first (cheap, read files only), then load and generate."""
    settings = get_settings()
    checked = static_checks(
        snapshot.path,
        list(snapshot.files),
        allow_custom_code=settings.allow_custom_code,
        allow_pickle=settings.allow_pickle,
        max_parameters=settings.max_parameters,
    )
    reference = runtime_checks(snapshot.path)
    crud.set_reference(submission_id=submission_id, reference=reference)
    return checked
