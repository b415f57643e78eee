"""The paddock API: one FastAPI app, its routers and how paddock's errors become HTTP.

Every error a client sees is one sentence in `detail`, written for the person who has to
act on it; the status code says who that is (401/404/409/422: the caller, 5xx: us).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

import paddock.api.routes.hooks as hooks
from paddock import __version__
from paddock.api.limits import Limits, RateLimited
from paddock.api.routes import chat, developers, feedback, metrics, openai_compat, submissions, web
from paddock.api.schemas import FieldError, ValidationErrorPublic
from paddock.db import init_db
from paddock.errors import (
    ConfigurationError,
    IllegalTransition,
    NotFound,
    PaddockError,
    Rejected,
    TransientError,
    Unauthorized,
)
from paddock.relay import pooled

__all__ = ["create_app", "STATUS_OF"]

log = logging.getLogger("paddock.api")

# The first match wins, so a subclass listed before its base would take precedence.
STATUS_OF: tuple[tuple[type[PaddockError], int], ...] = (
    (NotFound, 404),
    (Unauthorized, 401),
    (Rejected, 422),
    (IllegalTransition, 409),
    (ConfigurationError, 500),
    (TransientError, 503),
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Create the tables before the first request, so no request pays for it."""
    await run_in_threadpool(init_db)
    async with pooled(app):  # the chat relay's one pooled client to the model servers
        yield


def create_app() -> FastAPI:
    app = FastAPI(
        title="paddock",
        version=__version__,
        summary="Take a submitted language model to real users in minutes.",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        # Every 422 is `_invalid_request`'s answer, whichever router the route is on; a
        # router that does not say so would be documented with FastAPI's other shape.
        responses={422: {"model": ValidationErrorPublic, "description": "a malformed request"}},
    )
    app.state.limits = Limits.from_settings()  # this process's rate limits
    app.add_exception_handler(RateLimited, _rate_limited)
    app.add_exception_handler(PaddockError, _paddock_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_down)
    app.add_exception_handler(Exception, _unexpected)

    app.include_router(developers.router)
    app.include_router(submissions.router)
    app.include_router(chat.router)
    app.include_router(openai_compat.router)
    app.include_router(feedback.router)
    app.include_router(web.router)  # the browser pages and their static files
    app.include_router(metrics.router)  # GET /metrics for Prometheus
    app.include_router(hooks.router)  # Prefect automations call back here (SLA)
    return app


def _operation_id(route: APIRoute) -> str:
    """`submissions-create_submission`: stable names for generated clients."""
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


async def _paddock_error(request: Request, exc: Exception) -> JSONResponse:
    code = next((code for kind, code in STATUS_OF if isinstance(exc, kind)), 500)
    if code == 500:
        log.error("%s %s: %s", request.method, request.url.path, exc)
    headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
    return JSONResponse({"detail": str(exc)}, status_code=code, headers=headers)


async def _rate_limited(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RateLimited)
    headers = {"Retry-After": str(exc.retry_after)}
    return JSONResponse({"detail": str(exc)}, status_code=429, headers=headers)


async def _database_down(request: Request, exc: Exception) -> JSONResponse:
    # The database restarting or unreachable is ours to fix and usually passes: a 503 the
    # client may retry, not a 500. The failed transaction was rolled back, so a retry
    # neither loses nor doubles a write.
    log.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {"detail": "paddock's database is not answering just now; try again in a moment"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Starlette logs the traceback after this handler answers; the client gets a sentence.
    return JSONResponse(
        {"detail": "the paddock API failed unexpectedly; its log has the details"},
        status_code=500,
    )


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [_field_error(e) for e in exc.errors()]
    parts = [f"{'.'.join(map(str, e.loc))}: {e.msg}" if e.loc else e.msg for e in errors]
    body = ValidationErrorPublic(detail=f"invalid request — {'; '.join(parts)}", errors=errors)
    return JSONResponse(body.model_dump(mode="json"), status_code=422)


# FastAPI's answer to a body it cannot even decode (bytes that are not UTF-8): a bare 400,
# where every other malformed body is a 422 naming the problem.
_UNREADABLE_BODY = "There was an error parsing the body"


async def _http_error(request: Request, exc: Exception) -> Any:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400 and exc.detail == _UNREADABLE_BODY:
        error = FieldError(loc=[], msg="the body is not UTF-8 JSON text", type="json_invalid")
        body = ValidationErrorPublic(detail=f"invalid request — {error.msg}", errors=[error])
        return JSONResponse(body.model_dump(mode="json"), status_code=422)
    return await http_exception_handler(request, exc)


def _field_error(err: Any) -> FieldError:
    """Pydantic's error, said for the person who sent the request (and JSON-safe)."""
    loc = [p if isinstance(p, int) else str(p) for p in err.get("loc", ())]
    if loc and loc[0] == "body":
        loc = loc[1:]
    kind = str(err.get("type", ""))
    if kind == "json_invalid":
        reason = (err.get("ctx") or {}).get("error", "")
        return FieldError(loc=[], msg=f"the body is not valid JSON ({reason})", type=kind)
    msg = str(err.get("msg", "")).removeprefix("Value error, ")
    if kind == "missing" and not loc:
        msg = "a JSON body is required"
    elif kind == "extra_forbidden":
        msg = "unknown field"
    elif kind != "missing" and "input" in err:
        given = repr(err["input"])
        msg += f" (got {given if len(given) <= 60 else given[:57] + '...'})"
    return FieldError(loc=loc, msg=msg, type=kind)
