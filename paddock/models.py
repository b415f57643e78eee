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

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

__all__ = [
    "Status",
    "StageStatus",
    "Submission",
    "StageRun",
    "Artifact",
    "Deployment",
    "StressRun",
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
