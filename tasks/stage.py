"""What every pipeline stage shares: status, timeline rows, retries and resumption.

`@stage(...)` turns a function `(submission_id, ...) -> dict` into a Prefect task that
  * skips itself when an earlier run of the flow finished it and its output still exists
    (so re-running a flow resumes rather than redoes),
  * moves the submission to the stage's status through the lifecycle,
  * writes a timeline row per attempt (start, end, outcome, detail),
  * retries transient faults with exponential backoff and jitter, and never retries a
    `Rejected` submission.

Retries happen inside the task rather than through Prefect's `retries=`: Prefect 3.8 rolls
the enclosing transaction back at a task's *first* failed attempt, even when a retry then
succeeds, which would stop a deployment that a retried warm-up still needs. Each attempt
is still its own timeline row and log line.
"""

from __future__ import annotations

import functools
import random
import time
import traceback
from collections.abc import Callable
from typing import Any, ParamSpec

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from paddock import crud, lifecycle
from paddock.config import get_settings
from paddock.errors import IllegalTransition, PaddockError, Rejected
from paddock.models import StageStatus, Status

__all__ = ["stage", "STAGES"]

P = ParamSpec("P")
StageFn = Callable[..., dict[str, Any]]
Validity = Callable[[str, dict[str, Any]], bool]

# Stage name → the status a submission has while the stage runs.
STAGES: dict[str, Status] = {
    "download": Status.downloading,
    "sanity": Status.checking,
    "serialize": Status.serializing,
    "upload": Status.uploading,
    "deploy": Status.deploying,
    "warmup": Status.warming,
    "stress": Status.stress_testing,
}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, PaddockError):
        return str(exc)
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


def stage(
    name: str,
    *,
    retries: int = 3,
    timeout_seconds: float | None = None,
    still_valid: Validity | None = None,
) -> Callable[[StageFn], Any]:
    """Make `fn(submission_id, *args)` a recorded, retried, resumable pipeline stage."""
    status = STAGES[name]
    base_delay = get_settings().retry_base_seconds

    def decorate(fn: StageFn) -> Any:
        @functools.wraps(fn)
        def run(submission_id: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
            prior = crud.last_success(submission_id=submission_id, stage=name)
            if prior is not None and still_valid is not None:
                output = prior.detail.get("output", {})
                if still_valid(submission_id, output):
                    crud.record_skip(
                        submission_id=submission_id, stage=name, detail={"output": output}
                    )
                    return output
            try:
                lifecycle.transition(submission_id, status)
            except IllegalTransition as exc:
                raise Rejected(f"{name} cannot start: {exc}") from exc
            for attempt in range(retries + 1):
                try:
                    return _attempt(fn, name, submission_id, *args, **kwargs)
                except Rejected:
                    raise
                except Exception as exc:
                    if attempt == retries:
                        raise
                    delay = base_delay * 2**attempt * (1 + random.uniform(-0.5, 0.5))
                    get_run_logger().warning(
                        "%s attempt %d failed (%s); retrying in %.1f s",
                        name,
                        attempt + 1,
                        _describe(exc),
                        delay,
                    )
                    time.sleep(delay)
            raise AssertionError("unreachable")

        return task(
            run,
            name=name,
            timeout_seconds=timeout_seconds,
            persist_result=False,
            cache_policy=NO_CACHE,
        )

    return decorate


def _attempt(
    fn: StageFn, name: str, submission_id: str, *args: Any, **kwargs: Any
) -> dict[str, Any]:
    """One recorded attempt: a timeline row that ends succeeded, failed or rejected."""
    run_row = crud.start_stage(submission_id=submission_id, stage=name)
    try:
        output = fn(submission_id, *args, **kwargs)
    except Rejected as exc:
        crud.finish_stage(
            run_id=run_row.id, status=StageStatus.rejected, detail={"error": str(exc)}
        )
        raise
    except BaseException as exc:
        crud.finish_stage(
            run_id=run_row.id, status=StageStatus.failed, detail={"error": _describe(exc)}
        )
        raise
    crud.finish_stage(run_id=run_row.id, status=StageStatus.succeeded, detail={"output": output})
    return output
