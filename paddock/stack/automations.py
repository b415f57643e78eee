"""The SLA automations of ops/automations.yaml, built for a running stack: the webhook
block they call, the notification block they may send to, and the automations
themselves, replaced by name so a second `up --redeploy` leaves one of each.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import yaml

from paddock.config import Settings
from paddock.errors import ConfigurationError

from .layout import BREACH_AUTOMATION, DEPLOYMENT, HOOK_BLOCK, NOTIFY_AUTOMATION, REPO, Urls

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

__all__ = ["save_hook_block", "automation_specs", "replace_automations"]


def save_hook_block(url: Urls) -> UUID:
    """The webhook block the SLA automation calls: the hook's URL and secret, kept in
    Prefect's block store (shown masked in the UI), never in an automation's text."""
    from prefect.blocks.webhook import Webhook

    from paddock.sla import ensure_hook_secret

    block = Webhook(
        method="POST",
        url=url.hook,
        headers={
            "Authorization": f"Bearer {ensure_hook_secret()}",
            "Content-Type": "application/json",
        },
    )
    saved = block.save(HOOK_BLOCK, overwrite=True)
    assert isinstance(saved, UUID)  # called from sync code: not a coroutine
    return saved


def _notify_block(client: SyncPrefectClient, spec: str) -> UUID:
    """The id of the notification block named `type-slug/name`."""
    from prefect.exceptions import ObjectNotFound

    slug, _, name = spec.partition("/")
    if not name:
        raise ConfigurationError(
            f"PADDOCK_SLA_NOTIFY_BLOCK={spec!r} must be `block-type/name`, e.g. "
            "`slack-webhook/on-call`"
        )
    try:
        return client.read_block_document_by_name(name=name, block_type_slug=slug).id
    except ObjectNotFound:
        raise ConfigurationError(
            f"no {slug} block named {name!r} in Prefect; create it in the UI "
            "(Blocks → +) or unset PADDOCK_SLA_NOTIFY_BLOCK"
        ) from None


def automation_specs(
    *,
    deployment_id: UUID,
    sla_seconds: int,
    hook_block: UUID,
    notify_block: UUID | None,
    path: Path | None = None,
) -> list[dict[str, Any]]:
    """ops/automations.yaml with what only a running stack knows filled in.

    The SLA alarm gets the SLA's seconds, the submission deployment's id (so only its
    runs are timed) and the hook block; the notification automation is kept only when a
    notification block is configured.
    """
    data = yaml.safe_load((path or REPO / "ops" / "automations.yaml").read_text())
    specs: list[dict[str, Any]] = []
    for spec in copy.deepcopy(data["automations"]):
        kinds = {action["type"] for action in spec.get("actions", [])}
        if "send-notification" in kinds and notify_block is None:
            continue
        for action in spec.get("actions", []):
            if action["type"] == "call-webhook":
                action["block_document_id"] = str(hook_block)
            elif action["type"] == "send-notification":
                action["block_document_id"] = str(notify_block)
        if spec["name"] == BREACH_AUTOMATION:
            spec["trigger"]["within"] = sla_seconds
            spec["trigger"]["match_related"] = {
                "prefect.resource.role": "deployment",
                "prefect.resource.id": f"prefect.deployment.{deployment_id}",
            }
        specs.append(spec)
    return specs


def replace_automations(
    client: SyncPrefectClient, settings: Settings, hook_block: UUID
) -> list[str]:
    """Replace paddock's automations (by name) with ones built for this stack."""
    from prefect.events.schemas.automations import AutomationCore

    notify = _notify_block(client, settings.sla_notify_block) if settings.sla_notify_block else None
    specs = automation_specs(
        deployment_id=client.read_deployment_by_name(DEPLOYMENT).id,
        sla_seconds=settings.sla_seconds,
        hook_block=hook_block,
        notify_block=notify,
    )
    names = [BREACH_AUTOMATION, NOTIFY_AUTOMATION, *(s["name"] for s in specs)]
    for name in dict.fromkeys(names):
        for old in client.read_automations_by_name(name):
            client.delete_automation(old.id)
    for spec in specs:
        client.create_automation(AutomationCore(**spec))
    return [s["name"] for s in specs]
