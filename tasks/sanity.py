"""Stage 2: refuse broken or hostile models; record the greedy reference for parity.

A refused model's files are removed at once: nothing of a rejected submission stays on disk.
"""

from __future__ import annotations

from blocks import serving_target
from paddock import crud
from paddock.checks import runtime_checks, static_checks
from paddock.config import get_settings
from paddock.contracts import Checked, Snapshot
from paddock.errors import Rejected
from paddock.params import GenerationParams, validate_params
from tasks.download import discard_work
from tasks.stage import stage

__all__ = ["sanity"]


def _has_reference(submission_id: str, checked: Checked) -> bool:
    sub = crud.get_submission(submission_id=submission_id)
    return sub is not None and bool(sub.reference)


@stage("sanity", retries=0, still_valid=_has_reference)
def sanity(submission_id: str, snapshot: Snapshot) -> Checked:
    """Static checks first (cheap, read files only), then load and generate."""
    settings = get_settings()
    sub = crud.require_submission(submission_id=submission_id)
    try:
        params = GenerationParams(**validate_params(sub.generation_params or {}))
        checked = static_checks(
            snapshot.path,
            list(snapshot.files),
            allow_custom_code=settings.allow_custom_code,
            allow_pickle=settings.allow_pickle,
            max_parameters=settings.max_parameters,
            max_input_tokens=params.max_input_tokens,
            max_output_tokens=params.max_output_tokens,
            context_cap=serving_target().max_model_len,
        )
        reference = runtime_checks(snapshot.path)
    except Rejected:
        discard_work(settings.work_dir / submission_id, snapshot.path)
        raise
    crud.set_reference(submission_id=submission_id, reference=reference)
    return checked
