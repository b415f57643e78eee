"""What developers read about their models' users: ratings, shared conversations, the
leaderboard, and where the router would send the next user.

Another developer's submission answers 404, as a missing one does.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from paddock import feedback_views
from paddock import router as routing
from paddock.api.chat_schemas import ConversationSamples, LeaderboardPublic, SubmissionFeedback
from paddock.api.deps import CurrentDeveloper
from paddock.api.replies import RelayDep
from paddock.api.schemas import ErrorPublic, ValidationErrorPublic
from paddock.api.waking import WAKING, choose_or_retry_later

__all__ = ["router"]

_NOT_YOURS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorPublic, "description": "no such submission of yours"}
}

router = APIRouter(
    tags=["feedback"],
    responses={
        401: {"model": ErrorPublic, "description": "missing, unknown or revoked key"},
        422: {"model": ValidationErrorPublic, "description": "a malformed request"},
    },
)


@router.get("/submissions/{submission_id}/feedback", responses=_NOT_YOURS)
def read_feedback(
    submission_id: str,
    developer: CurrentDeveloper,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> SubmissionFeedback:
    """Your model's ratings: counts, retries, and the newest ratings with their text."""
    return feedback_views.submission_feedback(
        submission_id=submission_id, developer=developer.name, limit=limit
    )


@router.get("/submissions/{submission_id}/conversations", responses=_NOT_YOURS)
def read_conversations(
    submission_id: str,
    developer: CurrentDeveloper,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> ConversationSamples:
    """A random sample of the conversations users agreed to share, anonymized."""
    return feedback_views.conversation_samples(
        submission_id=submission_id, developer=developer.name, limit=limit
    )


@router.get("/leaderboard")
def read_leaderboard(developer: CurrentDeveloper) -> LeaderboardPublic:
    """The latest leaderboard the feedback flow computed (empty until it has run)."""
    return feedback_views.leaderboard()


@router.get("/route", responses=WAKING)
async def explain_route(
    developer: CurrentDeveloper,
    relay: RelayDep,
    mode: Annotated[Literal["beta", "arena"], Query()] = "beta",
) -> routing.RouteDecision:
    """Where the router would send the next user, and why (nothing is started; a parked
    model is woken, and while it wakes the answer is a 503 with `Retry-After`)."""
    return await choose_or_retry_later(relay.client, mode=mode)
