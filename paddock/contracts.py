"""What one pipeline stage hands the next.

Each hand-off is a small frozen model with the fields it really carries, so a stage's
signature says what it needs and the type checker holds every caller to it. They are
pydantic models rather than dataclasses because each one is also stored as the stage's
output in its timeline row: a re-run that skips a finished stage reads it back from
there (`Handoff.model_validate`), with the same validation as when it was made.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

__all__ = [
    "Handoff",
    "Snapshot",
    "Checked",
    "Bundle",
    "StoredBundle",
    "Endpoint",
    "WarmedUp",
    "StressSummary",
    "Published",
]


class Handoff(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Snapshot(Handoff):
    """A submission's files fetched at an immutable revision."""

    path: Path
    revision: str  # a commit sha, or a content hash for S3 and local sources
    files: tuple[str, ...]  # every file of the source, fetched or not (custom code shows)
    bytes: int  # what was fetched


class Checked(Handoff):
    """Facts the static checks established (the runtime checks store the reference)."""

    architecture: str
    parameters: int


class Bundle(Handoff):
    """A self-contained tensorizer bundle on local disk."""

    path: Path
    tensors: int
    bytes: int
    read_s: float
    write_s: float
    verify_s: float


class StoredBundle(Handoff):
    """A bundle in the model store, content-addressed by `digest`."""

    digest: str
    uri: str
    files: tuple[str, ...]
    bytes: int
    created: bool  # this run put it there, rather than finding an identical bundle


class Endpoint(Handoff):
    """A running OpenAI-compatible server for the submission."""

    url: str
    backend: str
    model: str  # the name clients send as `model`


class WarmedUp(Handoff):
    warmup_seconds: tuple[float, ...]
    parity: str


class StressSummary(Handoff):
    """The stress gate's verdict and headline figures (the full figures are a StressRun)."""

    passed: bool
    stress_run_id: int | None
    completed: int
    median_ttft_ms: float
    median_tpot_ms: float
    request_throughput: float


class Published(Handoff):
    endpoint: str
