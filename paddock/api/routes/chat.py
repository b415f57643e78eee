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

An arena's models are anonymous until the vote, so every sentence its user reads calls
them "Model A" and "Model B" — a failure included, and whatever a model's server echoed
into it (its name, its id) is masked too. The stored record (`Message.error`) keeps the
real name: developers and operators read that, not the user.

The reply is stored when its stream ends, even if the user has gone by then: the reading
task outlives the response, so the record is whole.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from paddock import availability, conversations, crud, privacy, verdicts
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
from paddock.api.schemas import ErrorPublic, ValidationErrorPublic
from paddock.availability import Served
from paddock.errors import (
    ConfigurationError,
    EndpointDown,
    IllegalTransition,
    NotFound,
    PaddockError,
)
from paddock.models import Conversation, ConversationMode
from paddock.prompting import ModelRequest, Turn, build_request
from paddock.relay import ModelDown, Relay, ReplyRefused, ReplyStats, ReplyStream

__all__ = [
    "router",
    "RelayDep",
    "Leg",
    "Event",
    "leg_for",
    "plan",
    "label",
    "Masker",
    "open_legs",
    "pump",
    "sse",
    "SSE_HEADERS",
]

log = logging.getLogger(__name__)

Side = Literal["a", "b"] | None

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

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


def _relay(request: Request) -> Relay:
    relay = getattr(request.app.state, "relay", None)
    if not isinstance(relay, Relay):
        raise ConfigurationError(
            "the relay is not running: the app was started without its lifespan"
        )
    return relay


RelayDep = Annotated[Relay, Depends(_relay)]


# --------------------------------------------------------------------------- reply engine
# Shared with the OpenAI-compatible route: plan the request(s), open the stream(s),
# pump their events, store each reply when it ends.


@dataclass(frozen=True, slots=True)
class Leg:
    """One model's part of a turn (an arena turn has two)."""

    side: Side
    served: Served
    request: ModelRequest


@dataclass(frozen=True, slots=True)
class Event:
    kind: Literal["delta", "done", "error"]
    side: Side
    text: str = ""
    message_id: int | None = None
    stats: ReplyStats | None = None


def sides_of(conv: Conversation) -> list[tuple[Side, str]]:
    if conv.mode == ConversationMode.arena and conv.model_b_id is not None:
        return [("a", conv.submission_id), ("b", conv.model_b_id)]
    return [(None, conv.submission_id)]


def leg_for(
    served: Served,
    turns: Sequence[Turn],
    *,
    side: Side = None,
    overrides: Mapping[str, Any] | None = None,
) -> Leg:
    request = build_request(
        submission=served.submission,
        model_name=served.served_name,
        turns=turns,
        overrides=overrides,
    )
    return Leg(side, served, request)


def plan(
    conv: Conversation,
    *,
    new_text: str | None,
    regenerate: bool = False,
    turns: Sequence[Turn] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> list[Leg]:
    """The request for each side, from the stored history (or the client's ``turns``).

    Runs before anything is stored, so a message that cannot be answered (too long, a
    model gone) is refused without leaving a trace in the conversation.
    """
    if conv.ended_at is not None:
        raise IllegalTransition(
            f"conversation {conv.id!r} has ended (it was rated); start a new one"
        )
    legs = []
    for side, submission_id in sides_of(conv):
        try:
            served = availability.require_served(submission_id=submission_id)
        except NotFound:
            if side is None:
                raise
            raise NotFound(
                f"{label(side)} is no longer being served; start a new conversation"
            ) from None
        if turns is not None:
            history = list(turns)
        else:
            history = [
                Turn("user" if m.role == "user" else "assistant", m.content)
                for m in conversations.history(conversation_id=conv.id, side=side)
            ]
        if regenerate:
            if history and history[-1].role == "assistant":
                history.pop()
            if not history:
                raise IllegalTransition("there is no message to answer again yet")
        if new_text is not None:
            history.append(Turn("user", new_text))
        legs.append(leg_for(served, history, side=side, overrides=overrides))
    return legs


def label(side: Literal["a", "b"]) -> str:
    """What an arena's user calls a model until the vote."""
    return f"Model {side.upper()}"


class Masker:
    """Replaces whatever could name an arena's models — display name, served name, id,
    source, developer — with "Model A"/"Model B" in text a model's server wrote (an
    error message that echoes the model's name), so nothing identifies them before the
    vote. Outside an arena it leaves text alone."""

    def __init__(self, legs: Sequence[Leg]) -> None:
        names: dict[str, str] = {}
        for leg in legs:
            if leg.side is None:
                continue
            sub = leg.served.submission
            known = (sub.id, sub.display_name, leg.served.served_name, sub.source, sub.developer)
            for name in known:
                if name and name.strip():
                    names.setdefault(name.strip().lower(), label(leg.side))
        self._names = names
        self._pattern = (
            re.compile(
                "|".join(
                    rf"(?<!\w){re.escape(n)}(?!\w)"
                    for n in sorted(names, key=len, reverse=True)  # the longest name wins
                ),
                re.IGNORECASE,
            )
            if names
            else None
        )

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: self._names.get(m.group().lower(), "a model"), text)

    def told(self, exc: PaddockError, side: Side) -> PaddockError:
        """``exc`` as ``side``'s user may read it (the model under its label)."""
        if side is None:
            return exc
        if isinstance(exc, ModelDown | ReplyRefused):
            return exc.said_as(label(side), self)
        return exc  # the chat side's own errors name conversations, never models

    def text(self, exc: PaddockError, side: Side) -> str:
        """What ``side``'s user reads of ``exc``: any error, a model's own or not."""
        if side is None:
            return str(exc)
        told = self.told(exc, side)
        return str(told) if told is not exc else self(str(exc))


async def open_legs(
    relay: Relay,
    conversation_id: str,
    legs: Sequence[Leg],
    *,
    stored: asyncio.Future[Any] | None = None,
) -> list[ReplyStream]:
    """Open every side's stream at once; if one fails, close the others and raise its error
    (a model that is down gets its failed attempt recorded, after the user's turn).

    ``stored`` is the user's turn being written meanwhile: its commit overlaps the model's
    prefill instead of adding to the time to first token. `pump` waits for it before it
    stores a reply, so every turn is on record before the reply's last event.
    """
    results = await asyncio.gather(
        *(relay.open(leg.served, leg.request) for leg in legs), return_exceptions=True
    )
    failed = [
        (leg, r) for leg, r in zip(legs, results, strict=True) if isinstance(r, BaseException)
    ]
    if not failed:
        return [r for r in results if isinstance(r, ReplyStream)]
    for r in results:
        if isinstance(r, ReplyStream):
            await r.aclose()
    if stored is not None:
        await stored  # the user's turn is kept (and comes first); its own error wins
    for leg, exc in failed:
        if isinstance(exc, EndpointDown):
            await run_in_threadpool(
                conversations.add_reply,
                conversation_id=conversation_id,
                submission_id=leg.served.submission.id,
                content="",
                side=leg.side,
                error=str(exc),  # the real name: the record is for developers and operators
            )
    leg, exc = failed[0]
    told = Masker(legs).told(exc, leg.side) if isinstance(exc, PaddockError) else exc
    if told is exc:
        raise exc
    raise told from exc


_running: set[asyncio.Task[None]] = set()  # reply readers outlive a client that left


async def pump(
    conversation_id: str,
    legs: Sequence[Leg],
    streams: Sequence[ReplyStream],
    *,
    regenerated: bool,
    stored: asyncio.Future[Any] | None = None,
) -> AsyncIterator[list[Event]]:
    """Every side's events as they come (in order, grouped as they arrived); each reply is
    stored as its stream ends, after the user's turn (``stored``) is."""
    queue: asyncio.Queue[Event | None] = asyncio.Queue()
    mask = Masker(legs)

    async def drive(leg: Leg, stream: ReplyStream) -> None:
        sid = leg.served.submission.id
        try:
            try:
                async for delta in stream:
                    queue.put_nowait(Event("delta", leg.side, delta))
            except EndpointDown as exc:
                if stored is not None:
                    await asyncio.shield(stored)
                await run_in_threadpool(
                    conversations.add_reply,
                    conversation_id=conversation_id,
                    submission_id=sid,
                    content=stream.stats.text,
                    side=leg.side,
                    error=str(exc),
                )
                queue.put_nowait(Event("error", leg.side, mask.text(exc, leg.side)))
                return
            stats = stream.stats
            if stored is not None:
                await asyncio.shield(stored)
            msg = await run_in_threadpool(
                conversations.add_reply,
                conversation_id=conversation_id,
                submission_id=sid,
                content=stats.text,
                side=leg.side,
                ttft_ms=stats.ttft_ms,
                latency_ms=stats.latency_ms,
                output_tokens=stats.output_tokens,
                regenerated=regenerated,
            )
            queue.put_nowait(Event("done", leg.side, message_id=msg.id, stats=stats))
        except PaddockError as exc:
            queue.put_nowait(Event("error", leg.side, mask.text(exc, leg.side)))
        except Exception:
            log.exception("relaying a reply of %s in %s failed", sid, conversation_id)
            queue.put_nowait(
                Event("error", leg.side, "the reply could not be completed; try again")
            )
        finally:
            queue.put_nowait(None)

    for leg, stream in zip(legs, streams, strict=True):
        task = asyncio.create_task(drive(leg, stream))
        _running.add(task)
        task.add_done_callback(_running.discard)
    remaining = len(legs)
    while remaining:
        # Whatever has arrived goes out together: under load one write (one syscall)
        # carries several pieces instead of one each; when idle, each piece goes alone.
        got = [await queue.get()]
        while not queue.empty():
            got.append(queue.get_nowait())
        remaining -= got.count(None)
        events = [e for e in got if e is not None]
        if events:
            yield events


def sse(event: BaseModel | dict[str, Any] | str) -> bytes:
    if isinstance(event, BaseModel):
        data = event.model_dump_json(exclude_none=True)
    elif isinstance(event, dict):
        import json

        data = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    else:
        data = event
    return b"data: " + data.encode() + b"\n\n"


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
