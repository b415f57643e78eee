"""What every pipeline stage shares: status, timeline rows, retries and resumption.

`@stage(name)` turns ``fn(submission_id, ...) -> Handoff`` into a Prefect task with the
same signature that

  * skips itself when an earlier run of the flow finished it and its output is still
    valid (so re-running a flow resumes rather than redoes),
  * stops a run whose lease another run took over (`LeaseLost`, never retried),
  * moves the submission to the stage's status through the lifecycle,
  * writes a timeline row per attempt (start, end, outcome, output or error),
  * retries what `paddock.retry.is_transient` calls transient, with the one retry policy
    handed to Prefect, so each retry is an `AwaitingRetry` state a platform engineer sees
    in the UI; a `Rejected` submission or a programming error fails at once.

Prefect's retries are safe here because nothing is rolled back behind a stage's back: the
flow undoes a failed run explicitly (`tasks.rollback`) once the failure is final, not
when a first attempt fails.
"""

from __future__ import annotations

import functools
import inspect
import traceback
import typing
from collections.abc import Callable
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from prefect import Task

from paddock import crud, leases, lifecycle
from paddock.contracts import Handoff
from paddock.errors import IllegalTransition, PaddockError, Rejected
from paddock.models import StageStatus
from paddock.retry import retried_task, stage_policy

__all__ = ["stage", "subflow_stage", "describe"]

P = ParamSpec("P")
H = TypeVar("H", bound=Handoff)


def describe(exc: BaseException) -> str:
    """A failure as one line for the timeline: our own messages as they are, others with
    their type and where they were raised (the bug report a person needs)."""
    if isinstance(exc, PaddockError):
        return str(exc)
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


class _Decorator(Protocol):
    def __call__(self, fn: Callable[P, H], /) -> Task[P, H]: ...


@overload
def stage(
    name: str,
    *,
    retries: int = ...,
    timeout_seconds: float | None = ...,
    still_valid: Callable[[str, H], bool],
    moves_status: bool = ...,
) -> Callable[[Callable[P, H]], Task[P, H]]: ...


@overload
def stage(
    name: str,
    *,
    retries: int = ...,
    timeout_seconds: float | None = ...,
    still_valid: None = ...,
    moves_status: bool = ...,
) -> _Decorator: ...


def stage(
    name: str,
    *,
    retries: int = 3,
    timeout_seconds: float | None = None,
    still_valid: Callable[[str, Any], bool] | None = None,
    moves_status: bool = True,
) -> Callable[[Callable[P, H]], Task[P, H]] | _Decorator:
    """Make ``fn(submission_id, ...)`` a recorded, retried, resumable pipeline stage.

    ``still_valid(submission_id, output)`` says whether an earlier run's output can stand
    in for this run's (the file is still on disk, the server still answers).
    ``moves_status=False``: the stage runs beside the main line, whose stages move the
    status (two stages moving it at once would leave it at whichever moved last).
    """

    def decorate(fn: Callable[P, H]) -> Task[P, H]:
        policy = stage_policy(retries)
        return retried_task(name, policy, timeout_seconds=timeout_seconds)(
            _recorded(name, fn, still_valid, moves_status=moves_status)
        )

    return decorate


def subflow_stage(name: str) -> Callable[[Callable[P, H]], Callable[P, H]]:
    """A stage whose work is a subflow (its own run, tasks and artifacts in the UI): the
    same status change and timeline row, called from the flow body, not wrapped in a task.
    The subflow retries its own parts; the stage itself is not retried."""

    def decorate(fn: Callable[P, H]) -> Callable[P, H]:
        return _recorded(name, fn, None)

    return decorate


def _recorded(
    name: str,
    fn: Callable[P, H],
    still_valid: Callable[[str, H], bool] | None,
    *,
    moves_status: bool = True,
) -> Callable[P, H]:
    """``fn`` with resume-by-skip, the status change and one timeline row per call."""
    status = lifecycle.stage_status(name) if moves_status else None
    output_type: type[H] = typing.get_type_hints(fn)["return"]
    signature = inspect.signature(fn)
    if next(iter(signature.parameters), None) != "submission_id":
        raise TypeError(f"stage {name}: {fn.__name__} must take submission_id first")

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> H:
        submission_id = str(signature.bind(*args, **kwargs).arguments["submission_id"])
        leases.ensure_held(submission_id)  # a run that lost its lease stops here
        prior = _valid_prior(submission_id, name, output_type, still_valid)
        if prior is not None:
            return prior
        if status is not None:
            try:
                lifecycle.transition(submission_id, status, expect=lifecycle.RUNNING)
            except IllegalTransition as exc:
                raise Rejected(f"{name} cannot start: {exc}") from exc
        row = crud.start_stage(submission_id=submission_id, stage=name)
        try:
            output = fn(*args, **kwargs)
        except Rejected as exc:
            crud.finish_stage(
                run_id=_id(row.id), status=StageStatus.rejected, detail={"error": str(exc)}
            )
            raise
        except BaseException as exc:
            crud.finish_stage(
                run_id=_id(row.id), status=StageStatus.failed, detail={"error": describe(exc)}
            )
            raise
        crud.finish_stage(
            run_id=_id(row.id),
            status=StageStatus.succeeded,
            detail={"output": output.model_dump(mode="json")},
        )
        return output

    return run


def _valid_prior(
    submission_id: str,
    name: str,
    output_type: type[H],
    still_valid: Callable[[str, H], bool] | None,
) -> H | None:
    """An earlier run's output of this stage, if it can stand in for running it again."""
    if still_valid is None:
        return None
    prior = crud.last_success(submission_id=submission_id, stage=name)
    if prior is None or "output" not in prior.detail:
        return None
    output = output_type.model_validate(prior.detail["output"])
    if not still_valid(submission_id, output):
        return None
    crud.record_skip(
        submission_id=submission_id, stage=name, detail={"output": prior.detail["output"]}
    )
    return output


def _id(row_id: int | None) -> int:
    if row_id is None:  # pragma: no cover - the database assigns it on insert
        raise AssertionError("stage run row has no id")
    return row_id
