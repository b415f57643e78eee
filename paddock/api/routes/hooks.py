"""Calls from the platform itself: Prefect automations reporting what they saw.

A hook changes what developers and operators are told (a breached SLA), so only a caller
holding the shared secret — the webhook block `paddock up` makes — is heard; anyone else
gets 401, whether they sent no secret or a wrong one.
"""

from __future__ import annotations

import hmac
import logging
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import Field

from paddock import crud, sla
from paddock.api.schemas import ErrorPublic, SlaPublic, Strict
from paddock.errors import Unauthorized

__all__ = ["router", "SlaBreachHook", "SlaBreachResult", "BREACH_EVENT"]

log = logging.getLogger("paddock.api.hooks")

BREACH_EVENT = "paddock.submission.sla-breached"

_bearer = HTTPBearer(auto_error=False, description="The hook secret (PADDOCK_HOOK_SECRET).")


def _platform(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    secret = sla.hook_secret()
    if credentials is None or secret is None:
        raise Unauthorized("this hook is for the platform's own automations")
    if not hmac.compare_digest(credentials.credentials.encode(), secret.encode()):
        raise Unauthorized("this hook is for the platform's own automations")


router = APIRouter(
    prefix="/hooks",
    tags=["hooks"],
    dependencies=[Depends(_platform)],
    responses={401: {"model": ErrorPublic, "description": "no or wrong hook secret"}},
)


class SlaBreachHook(Strict):
    """What the SLA automation sends: the late flow run and the submission it serves."""

    submission_id: str = Field(min_length=1, max_length=64)
    flow_run_id: str | None = Field(None, max_length=64)


class SlaBreachResult(Strict):
    submission_id: str
    recorded: bool = Field(description="True for the one call that recorded the breach")
    sla: SlaPublic


@router.post(
    "/sla-breach",
    responses={404: {"model": ErrorPublic, "description": "no such submission or clock"}},
)
def sla_breach(body: SlaBreachHook) -> SlaBreachResult:
    """A submission's run is still going past its SLA deadline: record the breach once and
    announce it as a Prefect event (for notifications and dashboards)."""
    breach = sla.record_breach(body.submission_id)
    if breach.recorded:
        _announce(body, breach.view)
    return SlaBreachResult(
        submission_id=body.submission_id,
        recorded=breach.recorded,
        sla=SlaPublic.model_validate(breach.view.as_dict()),
    )


def _announce(body: SlaBreachHook, view: sla.SlaView) -> None:
    """`paddock.submission.sla-breached`, when there is a Prefect server to tell."""
    from prefect.events import emit_event
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        return
    sub = crud.require_submission(submission_id=body.submission_id)
    related = []
    if body.flow_run_id:
        related.append(
            {
                "prefect.resource.id": f"prefect.flow-run.{body.flow_run_id}",
                "prefect.resource.role": "flow-run",
            }
        )
    emit_event(
        event=BREACH_EVENT,
        resource={
            "prefect.resource.id": f"paddock.submission.{sub.id}",
            "prefect.resource.name": sub.display_name,
        },
        related=related,
        payload={
            "sla_seconds": view.seconds,
            "deadline": view.deadline,
            "seconds_late": view.seconds_late,
            "breach_stage": view.breach_stage,
            "slowest_stage": view.slowest_stage,
            "developer": sub.developer,
        },
    )
    log.warning(
        "submission %s breached its %d s SLA in %s", sub.id, view.seconds, view.breach_stage
    )
