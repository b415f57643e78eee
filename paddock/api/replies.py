"""Replies from models, shared by the chat routes and the OpenAI-compatible one: plan each
model's request, open the stream(s), pump their events, store each reply when it ends.

An arena's models are anonymous until the vote, so every sentence its user reads calls
them "Model A" and "Model B" — a failure included, and whatever a model's server echoed
into it (its name, its id) is masked too (`Masker`). The stored record (`Message.error`)
keeps the real name: developers and operators read that, not the user.

The reply is stored when its stream ends, even if the user has gone by then: the reading
task outlives the response, so the record is whole.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from paddock import availability, conversations
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


def _relay(request: Request) -> Relay:
    relay = getattr(request.app.state, "relay", None)
    if not isinstance(relay, Relay):
        raise ConfigurationError(
            "the relay is not running: the app was started without its lifespan"
        )
    return relay


RelayDep = Annotated[Relay, Depends(_relay)]


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
        data = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    else:
        data = event
    return b"data: " + data.encode() + b"\n\n"
