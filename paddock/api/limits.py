"""Rate limits: how often a developer may submit and a chat user may ask a model.

Each limit is a token bucket per key: it holds up to ``burst`` requests and refills at a
steady rate, so a person working normally never meets it while a script hammering a
route is slowed to the rate. A refused request is a 429 whose ``Retry-After`` says when
the next one will be accepted.

What is limited, and by whom:

- submissions (``POST /submissions``, a redeploy): per developer — each one starts a
  pipeline run that downloads, converts and serves a model;
- chat (a conversation started, a message, a regeneration, an OpenAI-style completion):
  per user, by the user's keyed hash — each one takes model time. An OpenAI-style caller
  that names no user is limited by its address instead;
- conversation starts, again per client address: a user id is whatever the caller says,
  so minting a new one per request would otherwise escape the per-user limit.

Ratings and arena votes are not limited: one per conversation is all a conversation
takes, and conversations are.

**The buckets live in this API process's memory.** Each process keeps its own, so N
processes (uvicorn ``--workers N``, several replicas behind a load balancer) allow N times
the configured rate, and a restart forgets every bucket. A multi-process deployment that
needs one limit across processes needs a shared store (Redis, the database) behind
`Limiter`, or the limit enforced at the proxy in front. The client address is what the
server sees: behind a proxy it is the proxy's unless uvicorn is told to trust its
forwarding headers (``--forwarded-allow-ips``); an app backend that calls the chat routes
for all its users shares one address, so size ``PADDOCK_RATE_STARTS_PER_MINUTE_PER_IP``
(or set it to 0) for that.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from paddock import privacy
from paddock.api.deps import CurrentDeveloper
from paddock.api.schemas import ErrorPublic
from paddock.config import Settings, get_settings
from paddock.errors import PaddockError

__all__ = [
    "Rate",
    "Limiter",
    "Limits",
    "RateLimited",
    "RATE_LIMITED",
    "limits_of",
    "client_address",
    "submission_quota",
    "SubmissionQuota",
]

# Documented on every limited route, so clients (and the schema fuzzer) expect it.
RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {
        "model": ErrorPublic,
        "description": "too many requests; `Retry-After` says in how many seconds to retry",
        "headers": {
            "Retry-After": {
                "description": "seconds until the request would be accepted",
                "schema": {"type": "integer", "minimum": 1},
            }
        },
    }
}


class RateLimited(PaddockError):
    """A request over its limit; ``retry_after`` is the wait in seconds (a whole number,
    since that is what the ``Retry-After`` header carries)."""

    def __init__(self, message: str, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(f"{message}; try again in {self.retry_after} s")


@dataclass(frozen=True, slots=True)
class Rate:
    """``per_second`` tokens added, at most ``burst`` held; ``per_second`` 0 is no limit."""

    per_second: float
    burst: int

    @classmethod
    def per_minute(cls, count: float, burst: int) -> Rate:
        return cls(count / 60.0, burst)

    @classmethod
    def per_hour(cls, count: float, burst: int) -> Rate:
        return cls(count / 3600.0, burst)

    @property
    def unlimited(self) -> bool:
        return self.per_second <= 0


class Limiter:
    """Token buckets for one kind of request, one per key, safe across threads (sync
    routes run on FastAPI's thread pool, async ones on the event loop).

    At most ``max_keys`` buckets are kept: a full bucket is the same as none, so those go
    first, then the longest unused. A key forgotten that way starts again with a full
    bucket — generous, but the memory stays bounded however many keys callers invent.
    """

    def __init__(
        self,
        rate: Rate,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Spend one token of ``key``'s bucket: 0.0 if there was one, else the seconds
        until there will be (nothing is spent then)."""
        rate = self.rate
        if rate.unlimited:
            return 0.0
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.pop(key, (float(rate.burst), now))
            tokens = min(float(rate.burst), tokens + (now - at) * rate.per_second)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / rate.per_second
            if len(self._buckets) > self._max_keys:
                self._prune(now)
            return wait

    def _prune(self, now: float) -> None:
        rate = self.rate
        full = [
            k
            for k, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * rate.per_second >= rate.burst
        ]
        for k in full:
            del self._buckets[k]
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)  # the longest unused

    def __len__(self) -> int:
        return len(self._buckets)


class Limits:
    """The API process's limiters, read from the settings when the app is created."""

    def __init__(self, *, submissions: Rate, chat: Rate, starts_per_ip: Rate) -> None:
        self.submissions = Limiter(submissions)
        self.chat = Limiter(chat)
        self.starts = Limiter(starts_per_ip)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Limits:
        s = settings or get_settings()
        return cls(
            submissions=Rate.per_hour(s.rate_submissions_per_hour, s.rate_submissions_burst),
            chat=Rate.per_minute(s.rate_chat_per_minute, s.rate_chat_burst),
            starts_per_ip=Rate.per_minute(s.rate_starts_per_minute_per_ip, s.rate_starts_burst),
        )

    def submission(self, developer_id: str) -> None:
        wait = self.submissions.take(developer_id)
        if wait:
            raise RateLimited("too many submissions from your account", wait)

    def chat_turn(self, *, user_hash: str | None, address: str) -> None:
        """One request for a model's time: by the user when known, else by the address."""
        key = f"user:{user_hash}" if user_hash else f"address:{address}"
        wait = self.chat.take(key)
        if wait:
            who = "this user" if user_hash else "this address"
            raise RateLimited(f"too many chat requests from {who}", wait)

    def conversation_start(self, *, user_id: str | None, address: str) -> None:
        """A new conversation: it counts for the user and for the address it came from."""
        wait = self.starts.take(address)
        if wait:
            raise RateLimited("too many conversations started from this address", wait)
        self.chat_turn(user_hash=privacy.hash_user(user_id) if user_id else None, address=address)


def limits_of(request: Request) -> Limits:
    """The app's limits (created with the app; an app built without them gets defaults)."""
    state = request.app.state
    limits = getattr(state, "limits", None)
    if not isinstance(limits, Limits):
        limits = state.limits = Limits.from_settings()
    return limits


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def submission_quota(request: Request, developer: CurrentDeveloper) -> None:
    """A route dependency: one token of the developer's submission bucket (after the key
    is checked, so an unauthenticated caller spends nobody's tokens)."""
    limits_of(request).submission(developer.id)


SubmissionQuota = Annotated[None, Depends(submission_quota)]
