"""Every table paddock keeps, in one place (the full-stack FastAPI template's habit).

A submission is one model on its way to users; a stage run is one attempt at one pipeline
stage (so the timeline and the five-minute SLA can be read back); an artifact is one object
the pipeline wrote to the model store.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

__all__ = [
    "Status",
    "StageStatus",
    "Submission",
    "StageRun",
    "Artifact",
    "Deployment",
    "StressRun",
    "Developer",
    "ApiKey",
    "ConversationMode",
    "Conversation",
    "Message",
    "Feedback",
    "Battle",
    "ModelHealth",
    "LeaderboardSnapshot",
    "SlaRecord",
    "RunLease",
    "SubmissionKey",
    "utcnow",
    "new_id",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex[:12]


class Status(enum.StrEnum):
    submitted = "submitted"
    downloading = "downloading"
    checking = "checking"
    serializing = "serializing"
    uploading = "uploading"
    deploying = "deploying"
    warming = "warming"
    stress_testing = "stress_testing"
    deployed = "deployed"
    failed = "failed"
    inactive = "inactive"
    torndown = "torndown"
    archived = "archived"


class StageStatus(enum.StrEnum):
    running = "running"
    succeeded = "succeeded"
    failed = "failed"  # this attempt failed; the stage may be retried
    rejected = "rejected"  # the submission is at fault; never retried
    skipped = "skipped"  # finished by an earlier run of the flow


class Submission(SQLModel, table=True):
    __tablename__ = "submissions"

    id: str = Field(default_factory=new_id, primary_key=True)
    developer: str = Field(index=True)
    source: str
    requested_revision: str | None = None
    resolved_revision: str | None = None
    generation_params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    prompt_formatter: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    display_name: str
    status: Status = Field(default=Status.submitted, index=True)
    failed_stage: str | None = None
    reason: str | None = None
    endpoint: str | None = None
    # Greedy reference tokens from the sanity stage, for the warm-up parity check.
    reference: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class StageRun(SQLModel, table=True):
    __tablename__ = "stage_runs"

    id: int | None = Field(default=None, primary_key=True)
    submission_id: str = Field(foreign_key="submissions.id", index=True)
    stage: str
    attempt: int
    status: StageStatus = StageStatus.running
    started_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))

    @property
    def seconds(self) -> float | None:
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()


class Artifact(SQLModel, table=True):
    __tablename__ = "artifacts"

    id: int | None = Field(default=None, primary_key=True)
    submission_id: str = Field(foreign_key="submissions.id", index=True)
    uri: str
    size: int
    sha256: str
    created_at: datetime = Field(default_factory=utcnow)


class Deployment(SQLModel, table=True):
    """Where a submission is being served: enough for another process to find or stop it."""

    __tablename__ = "deployments"

    id: int | None = Field(default=None, primary_key=True)
    submission_id: str = Field(foreign_key="submissions.id", index=True)
    backend: str
    endpoint: str | None = None
    handle: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow)
    stopped_at: datetime | None = None


class StressRun(SQLModel, table=True):
    """One stress test against an endpoint: the profile, the figures and the SLO verdict."""

    __tablename__ = "stress_runs"

    id: int | None = Field(default=None, primary_key=True)
    submission_id: str | None = Field(default=None, foreign_key="submissions.id", index=True)
    endpoint: str
    profile: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    passed: bool = False
    failures: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


# --------------------------------------------------------------------------- feedback side
# Users are never stored by their id: `user_hash` is an HMAC of it (paddock.privacy), and
# every text a user or a model wrote is scrubbed of personal data before it is stored.


class Developer(SQLModel, table=True):
    """A model developer: owns submissions and API keys."""

    __tablename__ = "developers"

    id: str = Field(default_factory=new_id, primary_key=True)
    name: str = Field(index=True, unique=True)
    created_at: datetime = Field(default_factory=utcnow)


class ApiKey(SQLModel, table=True):
    """An API key, stored as a SHA-256 of the key (shown once, at creation); revocable."""

    __tablename__ = "api_keys"

    id: int | None = Field(default=None, primary_key=True)
    developer_id: str = Field(foreign_key="developers.id", index=True)
    prefix: str = Field(index=True)  # the key's first characters, to tell keys apart
    key_hash: str = Field(unique=True)
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None


class ConversationMode(enum.StrEnum):
    beta = "beta"  # one model chosen by the router
    arena = "arena"  # two anonymous models side by side, revealed after the vote
    api = "api"  # through the OpenAI-compatible relay


class Conversation(SQLModel, table=True):
    __tablename__ = "conversations"

    id: str = Field(default_factory=new_id, primary_key=True)
    mode: ConversationMode = ConversationMode.beta
    user_hash: str = Field(index=True)
    submission_id: str = Field(foreign_key="submissions.id", index=True)  # model (A in arena)
    model_b_id: str | None = Field(default=None, foreign_key="submissions.id", index=True)
    consent: bool = False  # the user agreed to share the conversation with the developer
    # Why the router chose this model (or pair): the candidates and their scores.
    route: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow, index=True)
    ended_at: datetime | None = None


class Message(SQLModel, table=True):
    """One turn. A regenerated reply supersedes the one before it (and counts as a retry)."""

    __tablename__ = "messages"

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversations.id", index=True)
    role: str  # "user" or "assistant"
    content: str  # scrubbed
    # The model that wrote an assistant turn; in an arena, "a" or "b".
    submission_id: str | None = Field(default=None, foreign_key="submissions.id", index=True)
    side: str | None = None
    regenerated: bool = False
    superseded: bool = False
    ttft_ms: float | None = None
    latency_ms: float | None = None
    output_tokens: int | None = None
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class Feedback(SQLModel, table=True):
    """Thumbs up or down and optional text, one per conversation; categorized later."""

    __tablename__ = "feedback"

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversations.id", unique=True)
    submission_id: str = Field(foreign_key="submissions.id", index=True)
    user_hash: str = Field(index=True)
    thumbs_up: bool
    text: str | None = None  # scrubbed
    category: str | None = None  # set by the feedback flow
    created_at: datetime = Field(default_factory=utcnow, index=True)


class Battle(SQLModel, table=True):
    """An arena vote between two anonymous models."""

    __tablename__ = "battles"

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversations.id", unique=True)
    model_a: str = Field(foreign_key="submissions.id", index=True)
    model_b: str = Field(foreign_key="submissions.id", index=True)
    winner: str  # "model_a", "model_b", "tie" or "tie (bothbad)"
    user_hash: str = Field(index=True)
    created_at: datetime = Field(default_factory=utcnow)


class ModelHealth(SQLModel, table=True):
    """Whether the router may send users to a model: a failed probe or relay call takes it
    out until it answers again."""

    __tablename__ = "model_health"
    __table_args__ = (UniqueConstraint("submission_id"),)

    id: int | None = Field(default=None, primary_key=True)
    submission_id: str = Field(foreign_key="submissions.id", index=True)
    healthy: bool = True
    checked_at: datetime = Field(default_factory=utcnow)
    error: str | None = None


class LeaderboardSnapshot(SQLModel, table=True):
    """What the feedback flow computed, kept so the leaderboard is read, not recomputed."""

    __tablename__ = "leaderboard_snapshots"

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    rows: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    arena: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))


class SlaRecord(SQLModel, table=True):
    """A submission's SLA clock: started once, at acceptance, and stopped once, by the
    outcome (met) or by the first alarm that found the run still going (breached)."""

    __tablename__ = "sla_records"

    submission_id: str = Field(foreign_key="submissions.id", primary_key=True)
    seconds: int  # the SLA in force when the submission was accepted
    accepted_at: datetime
    deadline: datetime = Field(index=True)
    met_at: datetime | None = None
    breached_at: datetime | None = None
    breach_stage: str | None = None  # the stage under way when the deadline passed


# --------------------------------------------------------------------------- hardening


class RunLease(SQLModel, table=True):
    """Who is running a submission's flow now: one row per submission, so two runs of one
    submission (a double `paddock run`, a redelivered flow run) cannot both start servers.
    A holder that stops heartbeating is presumed dead and may be taken over."""

    __tablename__ = "run_leases"

    submission_id: str = Field(foreign_key="submissions.id", primary_key=True)
    holder: str  # unique per holder: host, pid and a random part
    host: str
    pid: int
    acquired_at: datetime = Field(default_factory=utcnow)
    heartbeat_at: datetime = Field(default_factory=utcnow)


class SubmissionKey(SQLModel, table=True):
    """What makes two submissions the same (developer, source, revision, parameters,
    formatter), pointing at the live one: a double click or a retried request joins the
    submission already under way instead of starting a second pipeline."""

    __tablename__ = "submission_keys"

    key: str = Field(primary_key=True)  # sha256 of the canonical JSON of the parts
    submission_id: str = Field(foreign_key="submissions.id", index=True)
    created_at: datetime = Field(default_factory=utcnow)
