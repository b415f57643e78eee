"""A model waking up is a 503 with `Retry-After`, wherever the router is asked to choose.

The router raises `ModelWaking` when only a parked model could take a user: the right
answer is "come back in a few seconds", not the bare 503 of "nothing is served". The
routes that ask the router beside a chat start (an OpenAI `auto` completion, a
developer's `GET /route`) go through `choose_or_retry_later`, so clients see the header
`POST /chat/conversations` sends, and document it with `waking_503` so the schema
promises what the route sends.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
from fastapi import HTTPException, status

from paddock import router as routing
from paddock.api.schemas import ErrorPublic

__all__ = ["WAKING", "waking_503", "choose_or_retry_later"]


def waking_503(unavailable: str) -> dict[int | str, dict[str, Any]]:
    """The 503 of a route that asks the router, `unavailable` saying when else it comes.
    The header is not `required`: the same 503 also means "no model is healthy" (or,
    for a completion, "the model stopped answering"), which has no wait to give."""
    return {
        503: {
            "model": ErrorPublic,
            "description": f"{unavailable}; when the only models that could take it are "
            "waking up from idle, `Retry-After` says in how many seconds to try again",
            "headers": {
                "Retry-After": {
                    "description": "seconds until a waking model is likely to answer",
                    "schema": {"type": "integer", "minimum": 1},
                }
            },
        }
    }


WAKING = waking_503("no model can take a user right now")


async def choose_or_retry_later(
    client: httpx.AsyncClient, *, mode: Literal["beta", "arena", "api"]
) -> routing.RouteDecision:
    """The router's choice; a waking model becomes a 503 carrying its `Retry-After`."""
    try:
        return await routing.choose(client, mode=mode)
    except routing.ModelWaking as exc:
        headers = {"Retry-After": str(exc.retry_after)}
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), headers) from exc
