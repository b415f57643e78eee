"""The chat front end an app's backend calls: start, talk, regenerate, rate, vote.

Public: users are whoever the app says (`user_id`, stored only as a keyed hash); the
conversation id, random and returned once, is what lets a caller continue a conversation.

A reply streams as server-sent events: ``data: {"delta": …}`` per piece, then one
``data: {"done": true, "message_id": …, "ttft_ms": …, "latency_ms": …}`` — or
``data: {"error": …}`` if the model broke off (an arena tags every event with its
``side``, "a" or "b"). Everything that can be refused is refused before the stream starts,
with an HTTP status: an unknown conversation or a model no longer served (404), a message
that is empty, too long or binary (422), a rated conversation (409), a model that does not
answer (503 — the user's message is kept, and the router stops choosing that model).

An arena's models stay anonymous until the vote, and a reply is stored whole even if the
user left mid-stream: both are `paddock.api.replies`' doing, shared with /v1.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from paddock import conversations, crud, privacy, verdicts
from paddock import router as routing
from paddock.api.chat_schemas import (
    ConversationStarted,
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    FeedbackCreate,
    FeedbackPublic,
    ModelIdentity,
    RouteNote,
    StartConversation,
    UserMessage,
    VoteCreate,
    VotePublic,
    utc,
)
from paddock.api.limits import RATE_LIMITED, client_address, limits_of
from paddock.api.replies import (
    SSE_HEADERS,
    Event,
    Leg,
    RelayDep,
    open_legs,
    plan,
    pump,
    sse,
)
from paddock.api.schemas import ErrorPublic, ValidationErrorPublic
from paddock.models import ConversationMode
from paddock.relay import ReplyStream

__all__ = ["router"]

log = logging.getLogger(__name__)

_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {}},
        "description": "the reply as server-sent events",
    },
    404: {"model": ErrorPublic, "description": "no such conversation, or its model is gone"},
    409: {"model": ErrorPublic, "description": "the conversation has ended"},
    503: {"model": ErrorPublic, "description": "the model did not answer; the message is kept"},
}

router = APIRouter(
    prefix="/chat",
    tags=["chat"],
    responses={422: {"model": ValidationErrorPublic, "description": "a malformed request"}},
)


async def _events(
    conversation_id: str,
    legs: list[Leg],
    streams: list[ReplyStream],
    *,
    regenerated: bool,
    stored: asyncio.Future[Any] | None = None,
) -> AsyncIterator[bytes]:
    async for batch in pump(conversation_id, legs, streams, regenerated=regenerated, stored=stored):
        yield b"".join(_sse_of(ev) for ev in batch)


def _sse_of(ev: Event) -> bytes:
    if ev.kind == "delta":
        return sse(DeltaEvent(delta=ev.text, side=ev.side))
    if ev.kind == "done":
        assert ev.stats is not None and ev.message_id is not None
        return sse(
            DoneEvent(
                message_id=ev.message_id,
                ttft_ms=round(ev.stats.ttft_ms or 0.0, 3),
                latency_ms=round(ev.stats.latency_ms or 0.0, 3),
                output_tokens=ev.stats.output_tokens or 0,
                side=ev.side,
            )
        )
    return sse(ErrorEvent(error=ev.text, side=ev.side))


# --------------------------------------------------------------------------- routes


@router.post(
    "/conversations",
    status_code=status.HTTP_201_CREATED,
    responses={
        503: {
            "model": ErrorPublic,
            "description": "no model can take it right now; when one is waking up from "
            "idle, `Retry-After` says in how many seconds to try again",
        },
        **RATE_LIMITED,
    },
)
async def start_conversation(
    body: StartConversation, relay: RelayDep, request: Request
) -> ConversationStarted:
    """Start a conversation with the model the router picks (two anonymous ones in an arena).

    The user learns the model's name and one sentence on why (in an arena, neither); the
    router's whole explanation, which names every served model, is stored with the
    conversation for developers."""
    address = client_address(request)
    limits_of(request).conversation_start(user_id=body.user_id, address=address)
    try:
        decision = await routing.choose(relay.client, mode=body.mode)
    except routing.ModelWaking as exc:
        headers = {"Retry-After": str(exc.retry_after)}
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), headers) from exc
    arena = body.mode == "arena"
    conv = await run_in_threadpool(
        conversations.start_conversation,
        mode=ConversationMode(body.mode),
        user_id=body.user_id,
        submission_id=decision.chosen[0],
        model_b_id=decision.chosen[1] if arena else None,
        consent=body.consent,
        route=decision.model_dump(mode="json"),
    )
    if arena:  # nothing that could tell the two models apart before the vote
        return ConversationStarted(conversation_id=conv.id, mode=body.mode, model=None, route=None)
    name = next(c.name for c in decision.candidates if c.submission_id == decision.chosen[0])
    return ConversationStarted(
        conversation_id=conv.id,
        mode=body.mode,
        model=name,
        route=RouteNote(reason=routing.user_reason(decision)),
    )


@router.post("/conversations/{conversation_id}/messages", responses=_STREAM | RATE_LIMITED)
async def send_message(
    conversation_id: str, body: UserMessage, relay: RelayDep, request: Request
) -> StreamingResponse:
    """Send the user's message; the reply streams back (both replies, in an arena)."""
    conv = await run_in_threadpool(
        conversations.require_conversation, conversation_id=conversation_id
    )
    limits_of(request).chat_turn(user_hash=conv.user_hash, address=client_address(request))
    text = await run_in_threadpool(privacy.scrub, body.content)
    legs = await run_in_threadpool(plan, conv, new_text=text)
    stored = asyncio.ensure_future(
        run_in_threadpool(conversations.add_user_message, conversation_id=conv.id, content=text)
    )
    streams = await open_legs(relay, conv.id, legs, stored=stored)
    return StreamingResponse(
        _events(conv.id, legs, streams, regenerated=False, stored=stored),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


@router.post("/conversations/{conversation_id}/regenerate", responses=_STREAM | RATE_LIMITED)
async def regenerate(conversation_id: str, relay: RelayDep, request: Request) -> StreamingResponse:
    """Answer the last message again; the new reply replaces the old (and counts as a retry)."""
    conv = await run_in_threadpool(
        conversations.require_conversation, conversation_id=conversation_id
    )
    limits_of(request).chat_turn(user_hash=conv.user_hash, address=client_address(request))
    legs = await run_in_threadpool(plan, conv, new_text=None, regenerate=True)
    streams = await open_legs(relay, conv.id, legs)
    return StreamingResponse(
        _events(conv.id, legs, streams, regenerated=True),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


@router.post(
    "/conversations/{conversation_id}/feedback",
    status_code=status.HTTP_201_CREATED,
    responses={
        404: {"model": ErrorPublic, "description": "no such conversation"},
        409: {"model": ErrorPublic, "description": "it already has its rating"},
    },
)
def rate(conversation_id: str, body: FeedbackCreate) -> FeedbackPublic:
    """Thumbs up or down, with optional text; one per conversation, and it ends it."""
    fb = verdicts.end_with_feedback(
        conversation_id=conversation_id, thumbs_up=body.thumbs_up, text=body.text
    )
    assert fb.id is not None
    return FeedbackPublic(
        feedback_id=fb.id,
        conversation_id=conversation_id,
        thumbs_up=fb.thumbs_up,
        created_at=utc(fb.created_at),
    )


@router.post(
    "/conversations/{conversation_id}/vote",
    status_code=status.HTTP_201_CREATED,
    responses={
        404: {"model": ErrorPublic, "description": "no such conversation"},
        409: {"model": ErrorPublic, "description": "it already has its vote"},
    },
)
def vote(conversation_id: str, body: VoteCreate) -> VotePublic:
    """The arena vote; only now are the two models named."""
    battle = verdicts.record_battle(conversation_id=conversation_id, winner=body.winner)
    return VotePublic(
        conversation_id=conversation_id,
        winner=body.winner,
        model_a=_identity(battle.model_a),
        model_b=_identity(battle.model_b),
    )


def _identity(submission_id: str) -> ModelIdentity:
    sub = crud.require_submission(submission_id=submission_id)
    return ModelIdentity(submission_id=sub.id, name=sub.display_name, developer=sub.developer)
