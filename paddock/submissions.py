"""What a developer can do to a submission, whether the request came by CLI or API.

Both front ends call these functions, so a submission is validated, started, stopped and
redeployed the same way however it was asked for.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from paddock import crud, lifecycle
from paddock.db import session_scope
from paddock.dispatch import Run, start_run
from paddock.errors import (
    IllegalTransition,
    NotFound,
    Rejected,
    TransientError,
    explain_validation,
)
from paddock.models import Status, Submission, SubmissionKey, utcnow
from paddock.params import PromptFormatter, validate_params
from paddock.sources import check_revision, classify

__all__ = [
    "Draft",
    "draft",
    "submit",
    "Joined",
    "idempotency_key",
    "require_owned",
    "deactivate",
    "teardown",
    "redeploy",
    "REDEPLOYABLE",
]

REDEPLOYABLE = frozenset({Status.inactive, Status.torndown})


@dataclass(frozen=True)
class Draft:
    """A submission as it would be recorded: every default filled in."""

    developer: str
    source: str
    name: str
    revision: str | None
    generation_params: dict[str, Any]
    prompt_formatter: dict[str, Any]


def _formatter(values: dict[str, Any] | None) -> dict[str, Any]:
    """The templates filled in, or {} for none: then the model's own chat template
    formats prompts, as it was trained to see them."""
    if values is None:
        return {}
    try:
        return PromptFormatter(**values).model_dump()
    except ValidationError as exc:
        raise Rejected(
            explain_validation(
                exc,
                what="prompt formatter",
                item="template",
                known=list(PromptFormatter.model_fields),
            )
        ) from exc


def draft(
    *,
    developer: str,
    source: str,
    name: str | None = None,
    revision: str | None = None,
    generation_params: dict[str, Any] | None = None,
    prompt_formatter: dict[str, Any] | None = None,
) -> Draft:
    """Validate a submission without recording it; raises Rejected naming every problem."""
    source = source.strip()
    classify(source)  # a source of no known kind is refused now, not minutes later
    check_revision(revision)  # nor a revision with shell or path tricks (or a NUL)
    return Draft(
        developer=developer,
        source=source,
        name=name or source.rstrip("/").rsplit("/", 1)[-1] or source,
        revision=revision,
        generation_params=validate_params(generation_params or {}),
        prompt_formatter=_formatter(prompt_formatter),
    )


# An identical submission in one of these is joined rather than made again; once it has
# failed or been stopped, submitting the same thing again is a new attempt.
JOINABLE = frozenset({*lifecycle.PIPELINE})


class Joined(Run):
    """The run of an identical submission already under way, followed through its status
    (its own run may be another process's, or a Prefect worker's)."""

    def __init__(self, submission_id: str, poll: float = 1.0) -> None:
        self.submission_id = submission_id
        self._poll = poll

    def _status(self) -> Status:
        return Status(crud.require_submission(submission_id=self.submission_id).status)

    def alive(self) -> bool:
        return self._status() in lifecycle.RUNNING - {Status.failed}

    def wait(self) -> int:
        while self.alive():
            time.sleep(self._poll)
        return 0 if self._status() == Status.deployed else 1


def idempotency_key(draft_: Draft) -> str:
    """What makes two submissions the same request: the display name is left out, so a
    retried request that only renamed the model still joins the first."""
    parts = {
        "developer": draft_.developer,
        "source": draft_.source,
        "revision": draft_.revision,
        "generation_params": draft_.generation_params,
        "prompt_formatter": draft_.prompt_formatter,
    }
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def submit(draft_: Draft) -> tuple[Submission, Run]:
    """Record the submission and start its flow run; or, when an identical one is already
    under way (a double click, a retried request), that one and its run (`Joined`).

    Of identical submissions racing, exactly one is recorded and started: the key is
    claimed in the transaction that records the submission.
    """
    key = idempotency_key(draft_)
    for _ in range(10):
        live = _keyed(key)
        if live is not None:
            return live, Joined(live.id)
        sub = _record_keyed(draft_, key)
        if sub is not None:
            return sub, _start(sub.id)
    raise TransientError("identical submissions keep racing; try again in a moment")


def _keyed(key: str) -> Submission | None:
    """The live submission the key points at, if any."""
    with session_scope() as session:
        row = session.get(SubmissionKey, key)
        sub = session.get(Submission, row.submission_id) if row is not None else None
    return sub if sub is not None and Status(sub.status) in JOINABLE else None


def _record_keyed(draft_: Draft, key: str) -> Submission | None:
    """The new submission, holding the key; None when another request claimed it first."""
    sub = Submission(
        developer=draft_.developer,
        source=draft_.source,
        display_name=draft_.name,
        requested_revision=draft_.revision,
        generation_params=draft_.generation_params,
        prompt_formatter=draft_.prompt_formatter,
    )
    try:
        with session_scope() as session:
            previous = session.get(SubmissionKey, key)
            if previous is not None:
                holder = session.get(Submission, previous.submission_id)
                if holder is not None and Status(holder.status) in JOINABLE:
                    return None  # claimed since we looked: the caller joins that one
            session.add(sub)
            session.flush()
            if previous is None:
                session.add(SubmissionKey(key=key, submission_id=sub.id))
                session.flush()
            else:  # the key's submission ended: move the key, unless someone else did
                moved = session.connection().execute(
                    update(SubmissionKey)
                    .where(col(SubmissionKey.key) == key)
                    .where(col(SubmissionKey.submission_id) == previous.submission_id)
                    .values(submission_id=sub.id, created_at=utcnow())
                )
                if moved.rowcount != 1:
                    raise _Lost
    except (IntegrityError, _Lost):
        return None
    return sub


class _Lost(Exception):
    """Another request moved the key first (rolls the transaction back)."""


def _start(submission_id: str) -> Run:
    try:
        return start_run(submission_id)
    except OSError as exc:
        reason = f"the pipeline could not be started: {exc}"
        lifecycle.transition(submission_id, Status.failed, reason=reason, failed_stage="pipeline")
        raise TransientError(f"{reason}; `paddock run {submission_id}` tries again") from exc


def require_owned(*, submission_id: str, developer: str) -> Submission:
    """The developer's own submission; someone else's is indistinguishable from none."""
    sub = crud.get_submission(submission_id=submission_id)
    if sub is None or sub.developer != developer:
        raise NotFound(f"no submission {submission_id!r}; `paddock list` shows yours")
    return sub


def _stop(submission_id: str, new: Status) -> bool:
    """The status first, then the server: a run still under way finds at its next stage
    (or when its server is recorded) that it may not go on, and whatever server it
    recorded before the status changed is found here and stopped."""
    from paddock.serving import stop_serving

    sub = crud.require_submission(submission_id=submission_id)
    if sub.status != new:
        lifecycle.transition(submission_id, new, expect=sub.status)
    return stop_serving(submission_id)


def deactivate(*, submission_id: str) -> bool:
    """Stop sending users to the model and stop its server; True if a server was stopped."""
    return _stop(submission_id, Status.inactive)


def teardown(*, submission_id: str) -> bool:
    """Stop the model's server for good; True if a server was stopped."""
    return _stop(submission_id, Status.torndown)


def redeploy(*, submission_id: str) -> Run:
    """Serve an inactive or torn-down model again from its stored bundle.

    The status moves to `deploying` before the run starts: of two redeploys racing, one
    wins and the other is told so, rather than both starting a server.
    """
    sub = crud.require_submission(submission_id=submission_id)
    if sub.status not in REDEPLOYABLE:
        hint = ""
        if sub.status == Status.failed:
            hint = f"; an operator's `paddock run {submission_id}` resumes a failed one"
        raise IllegalTransition(
            f"submission {submission_id} is {sub.status}; only an inactive or torn-down "
            f"model can be redeployed{hint}"
        )
    lifecycle.transition(submission_id, Status.deploying, expect=REDEPLOYABLE)
    return _start(submission_id)
