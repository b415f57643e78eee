"""Stage 2b: load the model, run a forward pass, record the greedy reference for parity.

It runs beside serialize, upload and deploy (the flow submits it and joins it before
warm-up, which reads the reference), so its seconds are hidden behind theirs. It must not
touch the files under the others' feet: a refused model's work dir is removed by the flow
once the main line has stopped (`discard_refused`), not here.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from paddock import crud
from paddock.checks import runtime_checks
from paddock.config import get_settings
from paddock.contracts import Handoff, Snapshot
from tasks.stage import stage

__all__ = ["Referenced", "runtime", "discard_refused"]


class Referenced(Handoff):
    """What the runtime checks left: the reference itself is on the submission row,
    where warm-up's parity check reads it; this is the stage's record of it."""

    prompts: int
    max_new_tokens: int


def _has_reference(submission_id: str, referenced: Referenced) -> bool:
    sub = crud.get_submission(submission_id=submission_id)
    return sub is not None and bool(sub.reference)


@contextmanager
def _beside_the_main_line() -> Iterator[None]:
    """Torch limited to half the cores while the checks run: the main line beside them
    (serialize, upload, the server's start) is the critical path and needs the rest,
    and the checks have until warm-up to finish."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // 2))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@stage("runtime", retries=0, still_valid=_has_reference)
def runtime(submission_id: str, snapshot: Snapshot) -> Referenced:
    """The sanity stage scanned the values already; this loads and generates."""
    with _beside_the_main_line():
        reference = runtime_checks(snapshot.path, values_checked=True)
    crud.set_reference(submission_id=submission_id, reference=reference)
    return Referenced(
        prompts=len(reference["prompts"]), max_new_tokens=int(reference["max_new_tokens"])
    )


def discard_refused(submission_id: str) -> None:
    """Remove everything the run put on disk for a model the runtime checks refused (its
    source, the bundle, the serving config): nothing of a rejected submission stays."""
    shutil.rmtree(get_settings().work_dir / submission_id, ignore_errors=True)
