"""What a developer can do to a submission, whether the request came by CLI or API.

Both front ends call these functions, so a submission is validated, started, stopped and
redeployed the same way however it was asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from paddock import crud, lifecycle
from paddock.dispatch import Run, start_run
from paddock.errors import (
    IllegalTransition,
    NotFound,
    Rejected,
    TransientError,
    explain_validation,
)
from paddock.models import Status, Submission
from paddock.params import PromptFormatter, validate_params
from paddock.sources import check_revision, classify

__all__ = [
    "Draft",
    "draft",
    "submit",
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


def submit(draft_: Draft) -> tuple[Submission, Run]:
    """Record the submission and start its flow run."""
    sub = crud.create_submission(
        developer=draft_.developer,
        source=draft_.source,
        display_name=draft_.name,
        requested_revision=draft_.revision,
        generation_params=draft_.generation_params,
        prompt_formatter=draft_.prompt_formatter,
    )
    return sub, _start(sub.id)


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
    from paddock.serving import stop_serving

    sub = crud.require_submission(submission_id=submission_id)
    if sub.status != new and not lifecycle.can_transition(sub.status, new):
        raise IllegalTransition(f"submission {submission_id} is {sub.status}; cannot become {new}")
    stopped = stop_serving(submission_id)
    if sub.status != new:
        lifecycle.transition(submission_id, new, expect=sub.status)
    return stopped


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
