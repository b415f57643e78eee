"""Forward a built request to a model's server and stream its reply back, timed.

One pooled `httpx.AsyncClient` per process (the app's lifespan opens and closes it): a
client per request would pay a TCP handshake inside every reply's first token. The
stream is parsed from raw bytes and read to its end even after ``[DONE]`` so the
connection goes back to the pool.

Time to first token is measured from just before the request is sent to the first chunk
that carries text (what a user waits for), total latency to the end of the stream, and
output tokens come from the server's usage chunk (counted chunks when it sends none).

A model that refuses the connection, answers 5xx, or whose stream breaks or stalls is
marked down — the router then stops choosing it until a probe finds it answering — and
the caller gets `ModelDown` (an `EndpointDown`) with a sentence meant for the user. A 4xx is
the request's fault, not the model's: it is reported as `ReplyRefused` and the model stays
up. Both keep the model's name and the cause apart from their sentence, so a caller that
must not name the model (an arena before its vote) can say the same under another label.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

import httpx

from paddock import availability
from paddock.availability import Served
from paddock.config import get_settings
from paddock.errors import EndpointDown, Rejected
from paddock.prompting import ModelRequest

__all__ = [
    "Relay",
    "ReplyStats",
    "ReplyStream",
    "ModelDown",
    "ReplyRefused",
    "base_url",
    "pooled",
]

log = logging.getLogger(__name__)


def _sentence(name: str, why: str) -> str:
    return (
        f"{name} stopped answering ({why}). Your message is saved: try again in a moment, "
        "or start a new conversation to talk to another model."
    )


class ModelDown(EndpointDown):
    """A model that did not answer; ``why`` may quote its server, so it is kept apart
    from ``name`` for `said_as` to mask."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(_sentence(name, why))
        self.name = name
        self.why = why

    def __reduce__(self) -> tuple[type[ModelDown], tuple[str, str]]:
        return (type(self), (self.name, self.why))

    def said_as(self, label: str, mask: Callable[[str], str]) -> ModelDown:
        """The same failure told under ``label``, with ``mask`` applied to the cause."""
        return ModelDown(label, mask(self.why))


class ReplyRefused(Rejected):
    """The model's server refused this request (4xx): e.g. longer than its context."""

    def __init__(self, name: str, status: int, detail: str) -> None:
        super().__init__(f"{name} refused this request (HTTP {status}): {detail}")
        self.name = name
        self.status = status
        self.detail = detail

    def __reduce__(self) -> tuple[type[ReplyRefused], tuple[str, int, str]]:
        return (type(self), (self.name, self.status, self.detail))

    def said_as(self, label: str, mask: Callable[[str], str]) -> ReplyRefused:
        """The same refusal told under ``label``; the server's words go through ``mask``."""
        return ReplyRefused(label, self.status, mask(self.detail))


@dataclass(slots=True)
class ReplyStats:
    """What one reply took; filled while the stream is read."""

    parts: list[str] = field(default_factory=list)
    ttft_ms: float | None = None
    latency_ms: float | None = None
    output_tokens: int | None = None
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    chunks: int = 0

    @property
    def text(self) -> str:
        return "".join(self.parts)


def base_url(endpoint: str) -> str:
    """``http://host:port`` from an endpoint recorded with or without ``/v1``."""
    return endpoint.rstrip("/").removesuffix("/v1")


class ReplyStream:
    """An open upstream response; iterate it for the text deltas, then read `stats`."""

    def __init__(
        self, response: httpx.Response, started: float, served: Served, request: ModelRequest
    ) -> None:
        self._resp = response
        self._started = started
        self.served = served
        self.request = request
        self.stats = ReplyStats()

    async def aclose(self) -> None:
        await self._resp.aclose()

    async def __aiter__(self) -> AsyncIterator[str]:
        stats = self.stats
        first_choice: float | None = None
        done = False
        buf = b""
        try:
            async for chunk in self._resp.aiter_bytes():
                if done:
                    continue  # read to the end: the connection returns to the pool
                buf = (buf + chunk).replace(b"\r\n", b"\n")
                while not done:
                    i = buf.find(b"\n\n")
                    if i < 0:
                        break
                    event, buf = buf[:i], buf[i + 2 :]
                    data = _data_of(event)
                    if data is None:
                        continue
                    if data == b"[DONE]":
                        done = True
                        break
                    text = self._take(json.loads(data))
                    now = perf_counter()
                    if first_choice is None and stats.chunks:
                        first_choice = now
                    if text:
                        if stats.ttft_ms is None:
                            stats.ttft_ms = (now - self._started) * 1000
                        stats.parts.append(text)
                        yield text
        except httpx.HTTPError as exc:
            await self._down(f"the stream broke: {type(exc).__name__}", exc)
        except _StreamError as exc:
            await self._down(f"the server gave up on the reply: {exc}", exc)
        except ValueError as exc:  # not JSON: a proxy's error page, a truncated event
            await self._down("the stream was garbled", exc)
        finally:
            await self._resp.aclose()
        if not done:
            await self._down("the stream ended before the reply was complete", None)
        end = perf_counter()
        stats.latency_ms = (end - self._started) * 1000
        if stats.ttft_ms is None:  # an empty reply: the first chunk is the first token
            stats.ttft_ms = ((first_choice or end) - self._started) * 1000
        if stats.output_tokens is None:
            stats.output_tokens = len(stats.parts)

    def _take(self, obj: Any) -> str:
        if not isinstance(obj, dict):
            raise ValueError("an event that is not a JSON object")
        if "error" in obj and not obj.get("choices"):
            err = obj["error"]
            message = err.get("message") if isinstance(err, dict) else err
            raise _StreamError(str(message)[:200])
        usage = obj.get("usage")
        if usage:
            stats = self.stats
            stats.output_tokens = usage.get("completion_tokens")
            stats.prompt_tokens = usage.get("prompt_tokens")
        choices = obj.get("choices")
        if not choices:
            return ""
        self.stats.chunks += 1
        choice = choices[0]
        if choice.get("finish_reason"):
            self.stats.finish_reason = choice["finish_reason"]
        if "delta" in choice:
            return str(choice["delta"].get("content") or "")
        return str(choice.get("text") or "")

    async def _down(self, why: str, exc: BaseException | None) -> None:
        await _mark_down(self.served, why)
        raise ModelDown(self.served.submission.display_name, why) from exc


class _StreamError(ValueError):
    """An error object inside the stream (the server gave up on the reply)."""


def _data_of(event: bytes) -> bytes | None:
    lines = [
        line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")
    ]
    return b"\n".join(lines) if lines else None


async def _mark_down(served: Served, why: str) -> None:
    sid = served.submission.id
    log.warning("model %s at %s marked down: %s", sid, served.endpoint, why)
    await asyncio.to_thread(availability.mark_down, submission_id=sid, error=why)


class Relay:
    """The process's pooled client to model servers (the router's probes use it too)."""

    def __init__(self, client: httpx.AsyncClient | None = None) -> None:
        if client is None:
            s = get_settings()
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(
                    s.relay_read_timeout_s,
                    connect=s.relay_connect_timeout_s,
                    pool=s.relay_connect_timeout_s,
                ),
                limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
                headers={"Accept": "text/event-stream", "Accept-Encoding": "identity"},
                trust_env=False,  # an environment proxy must not sit between us and a model
            )
        self.client = client

    async def aclose(self) -> None:
        await self.client.aclose()

    async def open(self, served: Served, request: ModelRequest) -> ReplyStream:
        """Send the request and check the status; the body is read by iterating the result.

        A model that is down is found here, before any byte goes to the user, so the
        caller can still answer with an HTTP error instead of a broken stream.
        """
        url = base_url(served.endpoint) + request.path
        started = perf_counter()
        try:
            resp = await self.client.send(
                self.client.build_request("POST", url, json=request.body), stream=True
            )
        except httpx.HTTPError as exc:
            why = f"no connection: {type(exc).__name__}"
            await _mark_down(served, why)
            raise ModelDown(served.submission.display_name, why) from exc
        if resp.status_code == 200:
            return ReplyStream(resp, started, served, request)
        try:
            detail = (await resp.aread())[:500].decode("utf-8", "replace")
        except httpx.HTTPError:
            detail = ""
        finally:
            await resp.aclose()
        if resp.status_code >= 500:
            why = f"HTTP {resp.status_code}"
            await _mark_down(served, why)
            raise ModelDown(served.submission.display_name, why)
        raise ReplyRefused(served.submission.display_name, resp.status_code, _message_of(detail))


def _message_of(detail: str) -> str:
    try:
        obj = json.loads(detail)
    except ValueError:
        return detail.strip()[:300]
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, dict):
            return str(err.get("message") or err.get("detail") or err)[:300]
        return str(err)[:300]
    return detail.strip()[:300]


@asynccontextmanager
async def pooled(app: Any) -> AsyncIterator[Relay]:
    """The app's relay for its lifetime (``app.state.relay``), closed on shutdown."""
    relay = Relay()
    app.state.relay = relay
    try:
        yield relay
    finally:
        await relay.aclose()
