"""An OpenAI-compatible face on the served models, so an app can use the `openai` package.

`model` is a deployed submission's id or display name, or `auto` for the router's choice.
Like OpenAI, the client sends the whole history each time and that history is what the
model sees; paddock also keeps the conversation (mode `api`) so it can be rated through
`/chat/conversations/{id}/feedback` like any other. The conversation id comes back in the
`X-Paddock-Conversation` header of the first answer; a client continues the conversation
by sending it back in that header, or as the `user` field (a `user` that names no
conversation is taken as the end user's id, and starts one).

On a continued conversation only the newest user message is stored (the earlier ones
already are); on a new one the client's earlier turns are stored too, as context.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from paddock import availability, conversations, privacy
from paddock import router as routing
from paddock.api.chat_schemas import ChatCompletionCreate, ModelCard, ModelList
from paddock.api.limits import RATE_LIMITED, Limits, client_address, limits_of
from paddock.api.replies import (
    SSE_HEADERS,
    Leg,
    RelayDep,
    leg_for,
    open_legs,
    plan,
    pump,
    sse,
)
from paddock.api.schemas import ErrorPublic, ValidationErrorPublic
from paddock.api.waking import choose_or_retry_later, waking_503
from paddock.availability import Served
from paddock.conversations import WrongMode
from paddock.errors import NotFound, Rejected
from paddock.models import Conversation, ConversationMode, new_id
from paddock.prompting import Turn
from paddock.relay import ReplyStream

__all__ = ["router", "CONVERSATION_HEADER"]

CONVERSATION_HEADER = "X-Paddock-Conversation"

router = APIRouter(
    prefix="/v1",
    tags=["openai"],
    responses={
        404: {"model": ErrorPublic, "description": "no such model or conversation"},
        422: {"model": ValidationErrorPublic, "description": "a malformed request"},
        503: {"model": ErrorPublic, "description": "the model did not answer"},
    },
)


@router.get("/models")
def list_models() -> ModelList:
    """`auto`, then every deployed model by id and by display name (newest first)."""
    now = int(time.time())
    cards = [ModelCard(id="auto", created=now, owned_by="paddock")]
    seen = {"auto"}
    for served in availability.served_models():
        sub = served.submission
        created = int(sub.created_at.timestamp())
        for ident in (sub.id, sub.display_name):
            if ident not in seen:  # a name two models share means the newest
                seen.add(ident)
                cards.append(ModelCard(id=ident, created=created, owned_by=sub.developer))
    return ModelList(data=cards)


def _resolve(model: str) -> Served:
    served = availability.served_models()
    for s in served:
        if s.submission.id == model:
            return s
    for s in served:
        if model in (s.submission.display_name, s.served_name):
            return s
    raise NotFound(
        f"no deployed model {model!r}: it is unknown or no longer served; "
        "GET /v1/models lists the models, or send `auto`"
    )


def _find(header: str | None, user: str | None) -> Conversation | None:
    conv: Conversation | None = None
    if header is not None:
        conv = conversations.require_conversation(conversation_id=header)
    elif user is not None:
        conv = conversations.get_conversation(conversation_id=user)
        if conv is None or conv.mode != ConversationMode.api:
            return None  # `user` is the end user's id, not a conversation
    if conv is not None and conv.mode != ConversationMode.api:
        raise WrongMode(
            f"conversation {conv.id!r} is a {conv.mode} conversation; continue it through /chat"
        )
    return conv


def _turns(body: ChatCompletionCreate) -> list[Turn]:
    turns: list[Turn] = []
    for m in body.messages:
        role = "system" if m.role in ("system", "developer") else m.role
        turns.append(Turn(role, privacy.scrub(m.text())))  # type: ignore[arg-type]
    if turns[-1].role != "user":
        raise Rejected("the last message must be the user's: it is the one to answer")
    return turns


def _overrides(body: ChatCompletionCreate) -> dict[str, Any]:
    caps = [v for v in (body.max_tokens, body.max_completion_tokens) if v is not None]
    return {
        "temperature": body.temperature,
        "top_p": body.top_p,
        "top_k": body.top_k,
        "presence_penalty": body.presence_penalty,
        "frequency_penalty": body.frequency_penalty,
        "stop": body.stop,
        "max_tokens": min(caps) if caps else None,
    }


def _prepare(
    body: ChatCompletionCreate,
    header: str | None,
    decision: routing.RouteDecision | None,
    limits: Limits,
    address: str,
) -> tuple[str, Leg, Callable[[], object]]:
    """Find the conversation (or pick an id for a new one) and plan its request; return
    the write that records the user's turn(s), for the caller to run beside the model's
    prefill. Nothing is written here, so a refused request leaves no trace.

    A continued conversation counts against its user's rate limit; a new one is a
    conversation start (the caller's address, and the `user` it names if any)."""
    conv = _find(header, body.user)
    if conv is not None:
        limits.chat_turn(user_hash=conv.user_hash, address=address)
    else:
        limits.conversation_start(user_id=body.user, address=address)
    turns = _turns(body)
    overrides = _overrides(body)
    if conv is not None:
        sub = availability.require_served(submission_id=conv.submission_id).submission
        if body.model not in ("auto", sub.id, sub.display_name):
            raise Rejected(
                f"conversation {conv.id!r} talks to {sub.display_name} ({sub.id}); "
                f"send model {sub.display_name!r} or 'auto' with it"
            )
        (leg,) = plan(conv, new_text=None, turns=turns, overrides=overrides)
        return (
            conv.id,
            leg,
            partial(
                conversations.add_user_message, conversation_id=conv.id, content=turns[-1].content
            ),
        )
    if decision is not None:
        served = availability.require_served(submission_id=decision.chosen[0])
    else:
        served = _resolve(body.model)
        decision = routing.named(served.submission.id, served.submission.display_name)
    leg = leg_for(served, turns, overrides=overrides)
    conversation_id = new_id()
    # The conversation and every turn the client sent, in one transaction.
    start = partial(
        conversations.start_conversation,
        conversation_id=conversation_id,
        mode=ConversationMode.api,
        user_id=body.user or "openai-client",
        submission_id=served.submission.id,
        route=decision.model_dump(mode="json"),
        turns=[(t.role, t.content) for t in turns if t.role != "system"],
    )
    return conversation_id, leg, start


@router.post(
    "/chat/completions",
    responses={
        200: {"content": {"text/event-stream": {}, "application/json": {}}},
        **waking_503("no model can take it right now, or the model stopped answering"),
        **RATE_LIMITED,
    },
)
async def chat_completions(
    body: ChatCompletionCreate,
    relay: RelayDep,
    request: Request,
    conversation: Annotated[str | None, Header(alias=CONVERSATION_HEADER)] = None,
) -> Response:
    """A chat completion, streamed (OpenAI chunks, then `[DONE]`) or whole. With `auto`,
    while the only models that could answer are waking up: a 503 with `Retry-After`."""
    decision = None
    if body.model == "auto" and not (conversation or body.user):
        decision = await choose_or_retry_later(relay.client, mode="api")
    elif body.model == "auto":
        found = await run_in_threadpool(_find, conversation, body.user)
        if found is None:
            decision = await choose_or_retry_later(relay.client, mode="api")
    cid, leg, store = await run_in_threadpool(
        _prepare, body, conversation, decision, limits_of(request), client_address(request)
    )
    stored = asyncio.ensure_future(run_in_threadpool(store))
    (stream,) = await open_legs(relay, cid, [leg], stored=stored)
    headers = {CONVERSATION_HEADER: cid}
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    name = leg.served.submission.display_name
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _chunks(cid, leg, stream, stored, completion_id, name, include_usage),
            media_type="text/event-stream",
            headers={**SSE_HEADERS, **headers},
        )
    return await _whole(cid, leg, stream, stored, completion_id, name, headers)


def _chunk(
    completion_id: str, created: int, name: str, delta: dict[str, Any], finish: Any
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": name,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _usage(prompt_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": prompt_tokens + output_tokens,
    }


async def _chunks(
    conversation_id: str,
    leg: Leg,
    stream: ReplyStream,
    stored: asyncio.Future[Any],
    completion_id: str,
    name: str,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    created = int(time.time())
    yield sse(_chunk(completion_id, created, name, {"role": "assistant", "content": ""}, None))
    async for batch in pump(conversation_id, [leg], [stream], regenerated=False, stored=stored):
        out: list[bytes] = []
        for ev in batch:
            if ev.kind == "delta":
                out.append(sse(_chunk(completion_id, created, name, {"content": ev.text}, None)))
            elif ev.kind == "error":
                out.append(
                    sse({"error": {"message": ev.text, "type": "endpoint_down", "code": 503}})
                )
                yield b"".join(out)
                return  # no [DONE]: the reply broke off
            else:
                stats = ev.stats
                assert stats is not None
                finish = stats.finish_reason or "stop"
                out.append(sse(_chunk(completion_id, created, name, {}, finish)))
                if include_usage:
                    prompt = stats.prompt_tokens or leg.request.prompt_tokens
                    usage = _usage(prompt, stats.output_tokens or 0)
                    tail = _chunk(completion_id, created, name, {}, None)
                    tail["choices"] = []
                    tail["usage"] = usage
                    out.append(sse(tail))
        yield b"".join(out)
    yield sse("[DONE]")


async def _whole(
    conversation_id: str,
    leg: Leg,
    stream: ReplyStream,
    stored: asyncio.Future[Any],
    completion_id: str,
    name: str,
    headers: dict[str, str],
) -> Response:
    async for batch in pump(conversation_id, [leg], [stream], regenerated=False, stored=stored):
        ev = batch[-1]  # only the last event of a whole reply matters
        if ev.kind == "error":
            return JSONResponse({"detail": ev.text}, status_code=503, headers=headers)
        if ev.kind == "done":
            stats = ev.stats
            assert stats is not None
            prompt = stats.prompt_tokens or leg.request.prompt_tokens
            body = {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": stats.text},
                        "finish_reason": stats.finish_reason or "stop",
                    }
                ],
                "usage": _usage(prompt, stats.output_tokens or 0),
            }
            return JSONResponse(body, headers=headers)
    raise AssertionError("a reply ends with done or error")
