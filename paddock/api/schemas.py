"""Request and response bodies.

Every body is strict: a `0` is not a boolean and `"1"` is not a number, and an unknown
field is refused rather than ignored — a misspelt `temprature` must not quietly serve a
model with settings its developer never chose.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from paddock.models import ApiKey, Developer, Status, Submission
from paddock.params import GenerationParams, PromptFormatter

__all__ = [
    "Strict",
    "GenerationParameters",
    "PromptTemplates",
    "SubmissionCreate",
    "SubmissionDraft",
    "SubmissionPublic",
    "StopPublic",
    "StagePublic",
    "ArtifactPublic",
    "SlaPublic",
    "StatusPublic",
    "DeveloperPublic",
    "DeveloperCreated",
    "KeyPublic",
    "KeyCreated",
    "ErrorPublic",
    "FieldError",
    "ValidationErrorPublic",
]


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


def _utc(moment: datetime) -> datetime:
    """Stored timestamps come back naive (SQLite, Postgres `timestamp`); they are UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class GenerationParameters(GenerationParams):
    """The CLI's generation parameters, with the same bounds, read strictly."""

    model_config = ConfigDict(strict=True, extra="forbid")


class PromptTemplates(PromptFormatter):
    """The prompt formatter's templates, read strictly."""

    model_config = ConfigDict(strict=True, extra="forbid")


class SubmissionCreate(Strict):
    source: str = Field(
        min_length=1,
        max_length=2048,
        description="a hub repository id (org/name), s3://bucket/dir, or a server directory",
    )
    revision: str | None = Field(None, min_length=1, max_length=256, description="branch/tag/sha")
    name: str | None = Field(None, min_length=1, max_length=128, description="display name")
    generation_params: GenerationParameters = Field(default_factory=GenerationParameters)
    prompt_formatter: PromptTemplates | None = Field(
        None, description="Chai-style prompt templates; omit to use the model's chat template"
    )
    dry_run: bool = Field(False, description="validate and show the result; record nothing")


class SubmissionDraft(Strict):
    """What a dry run would have recorded, every default filled in."""

    developer: str
    source: str
    name: str
    revision: str | None
    generation_params: dict[str, Any]
    prompt_formatter: dict[str, Any]


class SubmissionPublic(Strict):
    id: str
    name: str
    developer: str
    source: str
    revision: str | None = Field(description="as requested")
    resolved_revision: str | None = Field(description="the immutable revision fetched")
    status: Status
    reason: str | None
    failed_stage: str | None
    endpoint: str | None
    generation_params: dict[str, Any]
    prompt_formatter: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, sub: Submission) -> SubmissionPublic:
        return cls(
            id=sub.id,
            name=sub.display_name,
            developer=sub.developer,
            source=sub.source,
            revision=sub.requested_revision,
            resolved_revision=sub.resolved_revision,
            status=Status(sub.status),
            reason=sub.reason,
            failed_stage=sub.failed_stage,
            endpoint=sub.endpoint,
            generation_params=sub.generation_params,
            prompt_formatter=sub.prompt_formatter,
            created_at=_utc(sub.created_at),
            updated_at=_utc(sub.updated_at),
        )


class StopPublic(Strict):
    id: str
    status: Status
    server_stopped: bool


class StagePublic(Strict):
    name: str
    status: str
    seconds: float | None
    attempts: int
    detail: str | None


class ArtifactPublic(Strict):
    uri: str
    size: int
    sha256: str


class SlaPublic(Strict):
    """The SLA clock: started at acceptance, stopped once by the outcome or an alarm."""

    seconds: int = Field(description="the SLA in force when the submission was accepted")
    accepted_at: str
    deadline: str
    state: str = Field(description="on_time, late (no alarm recorded yet), met or breached")
    elapsed_seconds: float
    seconds_left: float | None
    seconds_late: float | None
    met_at: str | None
    breached_at: str | None
    breach_stage: str | None = Field(description="the stage under way at the deadline")
    slowest_stage: str | None = Field(description="where the time went (`queued` included)")
    slowest_seconds: float | None
    queued_seconds: float


class StatusPublic(Strict):
    """A submission's timeline: exactly what `paddock status --json` prints."""

    id: str
    name: str
    source: str
    revision: str | None
    status: str
    reason: str | None
    failed_stage: str | None
    endpoint: str | None
    stages: list[StagePublic]
    artifacts: list[ArtifactPublic]
    stress: dict[str, Any] | None
    total_seconds: float
    sla_seconds: int
    within_sla: bool
    sla: SlaPublic | None


class DeveloperPublic(Strict):
    id: str
    name: str
    created_at: datetime

    @classmethod
    def from_row(cls, developer: Developer) -> DeveloperPublic:
        return cls(id=developer.id, name=developer.name, created_at=_utc(developer.created_at))


class KeyPublic(Strict):
    prefix: str
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, key: ApiKey) -> KeyPublic:
        revoked = _utc(key.revoked_at) if key.revoked_at else None
        return cls(prefix=key.prefix, created_at=_utc(key.created_at), revoked_at=revoked)


class KeyCreated(Strict):
    """A new key: `key` is shown this once and cannot be recovered."""

    prefix: str
    key: str


class DeveloperCreated(DeveloperPublic):
    """A new developer and their first key, shown this once."""

    prefix: str
    key: str


class ErrorPublic(Strict):
    detail: str = Field(description="one sentence for the person who has to act on it")


class FieldError(Strict):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorPublic(Strict):
    detail: str = Field(description="every bad field, its problem and the value given")
    errors: list[FieldError] = Field(
        default_factory=list,
        description="one per bad field (empty when the request was "
        "well-formed but refused, e.g. a source of no known kind)",
    )
