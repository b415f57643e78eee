"""One exception hierarchy for paddock, and one way to say a validation error to a person.

The split that matters is *who can fix it*:

    PaddockError
    ├── Rejected               the submission is at fault: never retried
    │   ├── SloMissed          the model served, but too slowly under load
    │   └── ModelRefused       the serving engine refuses the model (its own reason)
    ├── TransientError         the platform's problem (a blip, a slow server): retried
    │   ├── EndpointDown       a model endpoint did not answer
    │   └── BackendError       the serving backend could not start or reach the model
    ├── ConfigurationError     an operator's setting is wrong: never retried
    │   └── ProfileError       a load profile or SLO that cannot be run
    ├── IllegalTransition      a status change the lifecycle does not allow
    │   └── LeaseLost          another run took this run's lease: it must stop, touching nothing
    ├── NotFound               no such submission (or object)
    └── Unauthorized           no valid credentials for the API

Every message is written for the person who has to act on it. Third-party errors are
wrapped with ``raise … from exc`` at the boundary that understands them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

__all__ = [
    "PaddockError",
    "Rejected",
    "SloMissed",
    "ModelRefused",
    "TransientError",
    "EndpointDown",
    "BackendError",
    "ConfigurationError",
    "ProfileError",
    "IllegalTransition",
    "LeaseLost",
    "NotFound",
    "Unauthorized",
    "explain_validation",
]


class PaddockError(Exception):
    """Base class: every message is written for the person who has to act on it."""


class Rejected(PaddockError):
    """The submission itself is at fault; never retried."""


class SloMissed(Rejected):
    """The model served correctly but missed its latency SLO under load."""


class ModelRefused(Rejected):
    """The serving engine refused the model deterministically (bad config, unsupported)."""


class TransientError(PaddockError):
    """A fault outside the submission that may pass; retried with backoff."""


class EndpointDown(TransientError):
    """A model endpoint did not answer (the stress test's first request, a relay call)."""


class BackendError(TransientError):
    """The serving backend could not start or reach the model; `log_tail` says why."""

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        super().__init__(f"{message}\n--- log tail ---\n{log_tail}" if log_tail else message)
        self.log_tail = log_tail


class ConfigurationError(PaddockError, ValueError):
    """An operator's setting (environment, block, profile) is wrong; never retried."""


class ProfileError(ConfigurationError):
    """A load profile or SLO that cannot be run, found before any request is sent."""


class IllegalTransition(PaddockError):
    """A status change the lifecycle does not allow (or another process got there first)."""


class LeaseLost(IllegalTransition):
    """Another run took over this run's submission (its lease went stale, or its holder
    looked dead): this run stops at its next stage and leaves the submission, its upload
    and its server to the new holder."""


class NotFound(PaddockError):
    """No such submission (or object)."""


class Unauthorized(PaddockError):
    """A missing, wrong or revoked API key."""


def explain_validation(
    exc: ValidationError, *, what: str, item: str = "key", known: Sequence[str] = ()
) -> str:
    """One sentence naming every bad field of ``what``, its problem and the value given.

    Pydantic's own message is written for programmers (a URL to its docs, the model's
    class name); this one is for the person who typed the value.
    """
    parts: list[str] = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or what
        if err["type"] == "extra_forbidden":
            msg = f"unknown {item}"
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
        given: Any = err.get("input")
        shown = "" if err["type"] in ("missing", "extra_forbidden") else f" (got {given!r})"
        parts.append(f"{where}: {msg}{shown}")
    allowed = f" (allowed: {', '.join(known)})" if known else ""
    return f"invalid {what} — {'; '.join(parts)}{allowed}"
