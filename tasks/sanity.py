"""Stage 2: refuse broken or hostile models before anything is serialized or uploaded.

Everything that can tell from the files — names, config, headers, tokenizer, the chat
template, and every weight's values — runs here and blocks the pipeline; loading the
model and recording the parity reference is the runtime stage (tasks/runtime.py), which
runs beside serialize, upload and deploy. A refused model's files are removed at once:
nothing of a rejected submission stays on disk.
"""

from __future__ import annotations

from blocks import serving_target
from paddock import crud
from paddock.checks import static_checks
from paddock.checks.runtime import check_finite
from paddock.config import get_settings
from paddock.contracts import Checked, Snapshot
from paddock.errors import Rejected
from paddock.params import GenerationParams, validate_params
from tasks.download import discard_work
from tasks.stage import stage

__all__ = ["sanity"]


def _checked_before(submission_id: str, checked: Checked) -> bool:
    """The checks read only the files of an immutable revision: a pass stands."""
    return True


@stage("sanity", retries=0, still_valid=_checked_before)
def sanity(submission_id: str, snapshot: Snapshot) -> Checked:
    """Static checks (cheap, read files only), then the weights' values, tensor by tensor:
    NaN weights are as refusable as a lying header, and need no model built."""
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
        check_finite(snapshot.path)
    except Rejected:
        discard_work(settings.work_dir / submission_id, snapshot.path)
        raise
    return checked
