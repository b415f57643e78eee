"""Which model a new conversation talks to: the healthy one that most needs ratings.

New models need feedback most, so the router ranks every served model by how far it is
from a target number of ratings (thumbs and arena votes together), and breaks ties by
age, newest first. Once every model has reached the target they all tie, and the newest
wins: fresh submissions are what the beta is for.

A model the relay marked down is left out until it answers a probe (GET /health with a
short timeout, at most once per `router_reprobe_s` so a dead endpoint does not slow every
new conversation). Each decision carries its explanation — the candidates, their counts,
ages and health, and why the winner won — which is stored on the conversation and shown
to developers by `GET /route` and `paddock route --explain`. A user is told only
`user_reason`: the explanation names every served model, its ratings and its health, which
is the developers' business, and in an arena would give the anonymous pair away.

A model its backend has parked at zero replicas (idle, on Kubernetes) is asleep: never
chosen, since its user would wait out a cold start. When the ranking would have given it
users, it is woken (once; `paddock.waking`) so it serves again shortly; ranked below the
models that take the traffic, it stays asleep. When every model that could take the
conversation is asleep or waking, the caller gets `ModelWaking`, a 503 with a
Retry-After, instead of a hang.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict

from paddock import availability, conversations, waking
from paddock.availability import Served
from paddock.config import get_settings
from paddock.errors import TransientError
from paddock.models import utcnow

__all__ = [
    "NoModelAvailable",
    "ModelWaking",
    "RoutePolicy",
    "Candidate",
    "RouteDecision",
    "choose",
    "choose_sync",
    "named",
    "user_reason",
]


class NoModelAvailable(TransientError):
    """No served model is healthy right now (or fewer than an arena needs)."""


class ModelWaking(NoModelAvailable):
    """Not enough awake models, but one that could take the conversation is waking up:
    the answer is "try again in `retry_after` seconds", not "there is none"."""

    def __init__(self, message: str, retry_after: int = waking.RETRY_AFTER_S) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    target_feedback: int
    probe_timeout_s: float
    reprobe_s: float

    @classmethod
    def from_settings(cls) -> RoutePolicy:
        s = get_settings()
        return cls(s.router_target_feedback, s.router_probe_timeout_s, s.router_reprobe_s)


class Candidate(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    submission_id: str
    name: str
    ratings: int  # thumbs + arena votes
    needed: int  # ratings still missing to reach the target
    age_s: float
    healthy: bool
    health: str  # "ok", "recovered (probe answered)", or why it is out


class RouteDecision(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    mode: Literal["beta", "arena", "api"]
    chosen: list[str]  # one submission id, or two for an arena (A then B)
    target_feedback: int
    candidates: list[Candidate]  # ranked, best first; unhealthy ones last
    reason: str
    decided_at: datetime


def _rank_key(c: Candidate) -> tuple[bool, int, float, str]:
    return (not c.healthy, -c.needed, c.age_s, c.submission_id)


async def _probe(client: httpx.AsyncClient, endpoint: str, timeout_s: float) -> str | None:
    """None when the endpoint answers /health with 200, else why not."""
    try:
        resp = await client.get(endpoint.rstrip("/") + "/health", timeout=timeout_s)
    except httpx.HTTPError as exc:
        return f"probe failed: {type(exc).__name__}"
    return None if resp.status_code == 200 else f"probe answered HTTP {resp.status_code}"


async def _health(
    client: httpx.AsyncClient, served: list[Served], policy: RoutePolicy
) -> tuple[dict[str, tuple[bool, str]], set[str]]:
    """Each model's (healthy, why), and which of the down ones are waking up."""
    ids = [s.submission.id for s in served]
    rows = await asyncio.to_thread(availability.health_of, submission_ids=ids)
    now = utcnow()
    out: dict[str, tuple[bool, str]] = {}
    waking_ids = {
        sid for sid, row in rows.items() if not row.healthy and waking.is_waking(row.error)
    }
    to_probe: list[Served] = []
    for s in served:
        row = rows.get(s.submission.id)
        if row is None or row.healthy:
            out[s.submission.id] = (True, "ok")
            continue
        checked = row.checked_at.replace(tzinfo=row.checked_at.tzinfo or UTC)
        if (now - checked).total_seconds() < policy.reprobe_s:
            out[s.submission.id] = (False, f"down: {row.error} (probed again shortly)")
        else:
            to_probe.append(s)
    results = await asyncio.gather(
        *(_probe(client, s.endpoint, policy.probe_timeout_s) for s in to_probe)
    )
    for s, problem in zip(to_probe, results, strict=True):
        sid = s.submission.id
        if problem is None:
            await asyncio.to_thread(availability.mark_up, submission_id=sid)
            out[sid] = (True, "recovered (probe answered)")
            waking_ids.discard(sid)
        else:
            error = rows[sid].error or "down"
            await asyncio.to_thread(availability.mark_down, submission_id=sid, error=error)
            out[sid] = (False, f"down: {error}; {problem}")
    return out, waking_ids


async def _wake_wanted(
    ranked: list[Served],
    parked: dict[str, waking.Parked],
    in_reach: set[str],
    wanted: int,
    waker: waking.Waker,
) -> tuple[dict[str, tuple[bool, str]], set[str]]:
    """Wake the parked models this choice would have given users, and only those.

    ``ranked`` is best first by need and age alone; the first ``wanted`` of the models in
    reach (healthy, waking, or parked) are the ones users would get. A parked one among
    them is woken — users need it — while a parked model ranked below stays asleep, so
    parking idle models holds while the others take the traffic.
    """
    out: dict[str, tuple[bool, str]] = {}
    waking_ids: set[str] = set()
    wanted_ids = [s.submission.id for s in ranked if s.submission.id in in_reach][:wanted]
    for sid in parked:
        if sid not in wanted_ids:
            out[sid] = (False, "asleep (scaled to zero); left asleep: others rank first")
            continue
        is_waking, why = await asyncio.to_thread(waker.wake, parked[sid])
        if why == "no longer parked":  # woken by someone else since we looked
            why = "no longer parked (woken elsewhere); probed at the next choice"
        out[sid] = (False, why)
        if is_waking:
            waking_ids.add(sid)
    return out, waking_ids


async def choose(
    client: httpx.AsyncClient,
    *,
    mode: Literal["beta", "arena", "api"] = "beta",
    policy: RoutePolicy | None = None,
    waker: waking.Waker | None = None,
) -> RouteDecision:
    """Pick one model (two distinct ones for an arena) or raise NoModelAvailable
    (ModelWaking when a model that could take it is waking up)."""
    policy = policy or RoutePolicy.from_settings()
    waker = waker or waking.default_waker(policy.reprobe_s)
    served = await asyncio.to_thread(availability.served_models)
    ids = [s.submission.id for s in served]
    parked = await asyncio.to_thread(waker.parked, ids)
    awake = [s for s in served if s.submission.id not in parked]
    health, still_waking = await _health(client, awake, policy)
    counts = await asyncio.to_thread(conversations.feedback_counts, submission_ids=ids)
    now = utcnow()
    wanted = 2 if mode == "arena" else 1

    def needed(s: Served) -> int:
        total, _ups, votes = counts[s.submission.id]
        return max(policy.target_feedback - (total + votes), 0)

    def created(s: Served) -> datetime:
        return s.submission.created_at.replace(tzinfo=s.submission.created_at.tzinfo or UTC)

    ranked = sorted(served, key=lambda s: (-needed(s), now - created(s), s.submission.id))
    in_reach = {sid for sid, (up, _) in health.items() if up} | still_waking | set(parked)
    asleep, woken = await _wake_wanted(ranked, parked, in_reach, wanted, waker)
    health.update(asleep)
    waking_ids = woken | still_waking
    candidates = []
    for s in served:
        total, _ups, votes = counts[s.submission.id]
        is_up, why = health[s.submission.id]
        candidates.append(
            Candidate(
                submission_id=s.submission.id,
                name=s.submission.display_name,
                ratings=total + votes,
                needed=needed(s),
                age_s=round((now - created(s)).total_seconds(), 3),
                healthy=is_up,
                health=why,
            )
        )
    candidates.sort(key=_rank_key)
    healthy = [c for c in candidates if c.healthy]
    if len(healthy) < wanted:
        down = len(candidates) - len(healthy)
        if waking_ids and len(healthy) + len(waking_ids) >= wanted:
            n = len(waking_ids)
            raise ModelWaking(
                f"no model is awake to take a new {mode} conversation right now: "
                f"{n} {'is' if n == 1 else 'are'} waking up after being idle; "
                f"try again in {waking.RETRY_AFTER_S} s"
            )
        raise NoModelAvailable(
            f"no model can take a new {mode} conversation right now: {len(healthy)} healthy "
            f"of {len(candidates)} served ({down} down); try again in a moment"
        )
    chosen = healthy[:wanted]
    return RouteDecision(
        mode=mode,
        chosen=[c.submission_id for c in chosen],
        target_feedback=policy.target_feedback,
        candidates=candidates,
        reason=_reason(chosen, healthy, policy.target_feedback),
        decided_at=now,
    )


def _reason(chosen: list[Candidate], healthy: list[Candidate], target: int) -> str:
    def one(c: Candidate, pool: list[Candidate]) -> str:
        rest = [o for o in pool if o.submission_id != c.submission_id]
        head = f"{c.name} ({c.submission_id}) has {c.ratings} of {target} ratings"
        if not rest:
            return f"{head}; it is the only healthy model left to choose"
        if all(o.needed < c.needed for o in rest):
            return f"{head}, the furthest from the target among {len(pool)} healthy models"
        return (
            f"{head}; {sum(o.needed == c.needed for o in rest) + 1} models need as many, "
            "and it is the newest of them"
        )

    parts = [one(chosen[0], healthy)]
    if len(chosen) > 1:
        parts.append("B: " + one(chosen[1], healthy[1:]))
        parts[0] = "A: " + parts[0]
    return "; ".join(parts)


def user_reason(decision: RouteDecision) -> str:
    """One sentence for the user about the model they were given, and nothing about the
    others (an arena's user is told nothing at all before the vote)."""
    if decision.mode == "arena":
        raise ValueError("an arena's models stay anonymous until the vote: no reason to give")
    sid = decision.chosen[0]
    chosen = next((c for c in decision.candidates if c.submission_id == sid), None)
    if chosen is None:  # a client that named the model itself
        return "you asked for this model by name"
    if chosen.needed:
        return (
            f"{chosen.name} still needs {chosen.needed} of its {decision.target_feedback} "
            "ratings, so your feedback helps its developer most"
        )
    return f"{chosen.name} is the newest model here, and new models are what this beta is for"


def named(submission_id: str, name: str) -> RouteDecision:
    """The record for a conversation whose client chose the model itself."""
    return RouteDecision(
        mode="api",
        chosen=[submission_id],
        target_feedback=get_settings().router_target_feedback,
        candidates=[],
        reason=f"the client asked for {name} ({submission_id}) by name",
        decided_at=utcnow(),
    )


def choose_sync(
    *, mode: Literal["beta", "arena", "api"] = "beta", policy: RoutePolicy | None = None
) -> RouteDecision:
    """`choose` for the CLI: its own short-lived client."""

    async def run() -> RouteDecision:
        async with httpx.AsyncClient(trust_env=False) as client:
            return await choose(client, mode=mode, policy=policy)

    return asyncio.run(run())
