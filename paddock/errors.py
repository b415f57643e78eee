"""One exception hierarchy for the domain.

The split that matters is *who can fix it*: a `Rejected` submission needs its developer
to change something, so retrying is pointless; a `TransientError` is the platform's
problem (a network blip, a slow server) and the stage is retried with backoff.
"""

from __future__ import annotations

__all__ = ["PaddockError", "Rejected", "TransientError", "IllegalTransition", "NotFound"]


class PaddockError(Exception):
    """Base class: every message is written for the person who has to act on it."""


class Rejected(PaddockError):
    """The submission itself is at fault; never retried."""


class TransientError(PaddockError):
    """A fault outside the submission that may pass; retried with backoff."""


class IllegalTransition(PaddockError):
    """A status change the lifecycle does not allow (or another process got there first)."""


class NotFound(PaddockError):
    """No such submission (or object)."""
