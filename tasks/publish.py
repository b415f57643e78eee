"""Stage 8: open the model to users."""

from __future__ import annotations

from typing import Any

from prefect import task

from paddock import lifecycle
from paddock.models import Status

__all__ = ["publish"]


@task(name="publish", retries=3, retry_delay_seconds=[1, 2, 4])
def publish(submission_id: str, deployed: dict[str, Any]) -> str:
    lifecycle.transition(submission_id, Status.deployed, endpoint=deployed["endpoint"])
    return deployed["endpoint"]
