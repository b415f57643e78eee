"""A developer's submissions: submit, watch, stop and redeploy their own models.

Another developer's submission answers 404, exactly as a missing one does: whether an id
exists is itself something only its owner should learn.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status

from paddock import crud, submissions, timeline
from paddock.api.deps import CurrentDeveloper
from paddock.api.limits import RATE_LIMITED, submission_quota
from paddock.api.schemas import (
    ErrorPublic,
    StatusPublic,
    StopPublic,
    SubmissionCreate,
    SubmissionDraft,
    SubmissionPublic,
    ValidationErrorPublic,
)

__all__ = ["router"]

_NOT_YOURS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorPublic, "description": "no such submission of yours"}
}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorPublic, "description": "its status does not allow this"}
}

router = APIRouter(
    prefix="/submissions",
    tags=["submissions"],
    responses={
        401: {"model": ErrorPublic, "description": "missing, unknown or revoked key"},
        422: {"model": ValidationErrorPublic, "description": "a malformed or refused request"},
    },
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {
            "model": SubmissionPublic | SubmissionDraft,
            "description": "an identical submission already under way (nothing new was "
            "recorded or started); or, for a dry run, what would be recorded",
        },
        503: {"model": ErrorPublic, "description": "the pipeline could not be started"},
        **RATE_LIMITED,
    },
    dependencies=[Depends(submission_quota)],  # a run each: per developer, rate-limited
)
def create_submission(
    body: SubmissionCreate, developer: CurrentDeveloper, response: Response
) -> SubmissionPublic | SubmissionDraft:
    """Submit a model: validate it, record it and start its pipeline run."""
    draft = submissions.draft(
        developer=developer.name,
        source=body.source,
        name=body.name,
        revision=body.revision,
        generation_params=body.generation_params.model_dump(),
        prompt_formatter=body.prompt_formatter.model_dump() if body.prompt_formatter else None,
    )
    if body.dry_run:
        response.status_code = status.HTTP_200_OK
        return SubmissionDraft(**asdict(draft))
    sub, run = submissions.submit(draft)
    if isinstance(run, submissions.Joined):  # an identical one is under way: nothing new
        response.status_code = status.HTTP_200_OK
    return SubmissionPublic.from_row(sub)


@router.get("")
def read_submissions(
    developer: CurrentDeveloper, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> list[SubmissionPublic]:
    """Your submissions, newest first."""
    rows = crud.list_submissions(developer=developer.name, limit=limit)
    return [SubmissionPublic.from_row(s) for s in rows]


@router.get("/{submission_id}", responses=_NOT_YOURS)
def read_submission(submission_id: str, developer: CurrentDeveloper) -> StatusPublic:
    """One submission's status and timeline: stages, seconds, attempts, artifacts, SLA."""
    submissions.require_owned(submission_id=submission_id, developer=developer.name)
    return StatusPublic.model_validate(timeline.build(submission_id).as_dict())


@router.post("/{submission_id}/deactivate", responses=_NOT_YOURS | _CONFLICT)
def deactivate_submission(submission_id: str, developer: CurrentDeveloper) -> StopPublic:
    """Stop sending users to the model and stop its server; it can be redeployed."""
    submissions.require_owned(submission_id=submission_id, developer=developer.name)
    stopped = submissions.deactivate(submission_id=submission_id)
    return _stopped(submission_id, stopped)


@router.post("/{submission_id}/teardown", responses=_NOT_YOURS | _CONFLICT)
def teardown_submission(submission_id: str, developer: CurrentDeveloper) -> StopPublic:
    """Stop the model's server for good (its stored bundle stays for a redeploy)."""
    submissions.require_owned(submission_id=submission_id, developer=developer.name)
    stopped = submissions.teardown(submission_id=submission_id)
    return _stopped(submission_id, stopped)


@router.post(
    "/{submission_id}/redeploy",
    status_code=status.HTTP_202_ACCEPTED,
    responses=_NOT_YOURS | _CONFLICT | RATE_LIMITED,
    dependencies=[Depends(submission_quota)],
)
def redeploy_submission(submission_id: str, developer: CurrentDeveloper) -> SubmissionPublic:
    """Serve an inactive or torn-down model again; its run skips the finished stages."""
    submissions.require_owned(submission_id=submission_id, developer=developer.name)
    submissions.redeploy(submission_id=submission_id)
    return SubmissionPublic.from_row(crud.require_submission(submission_id=submission_id))


def _stopped(submission_id: str, server_stopped: bool) -> StopPublic:
    sub = crud.require_submission(submission_id=submission_id)
    return StopPublic(id=sub.id, status=sub.status, server_stopped=server_stopped)
