"""Rows and bundles as the pipeline and the chat side would leave them, aged at will."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlmodel import col, select

from paddock import conversations, crud
from paddock.db import session_scope
from paddock.models import (
    ConversationMode,
    Deployment,
    Message,
    StageRun,
    Status,
    Submission,
    utcnow,
)
from paddock.storage import Store, bundle_manifest


def put_bundle(store: Store, root: Path, content: bytes) -> str:
    """Upload a small bundle (`content` as its tensors) to `store`; returns its digest."""
    local = root / f"bundle-{content.hex()[:16]}"
    local.mkdir(parents=True, exist_ok=True)
    (local / "model.tensors").write_bytes(content)
    (local / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    manifest = bundle_manifest(local)
    store.put_bundle(local, manifest)
    return str(manifest["digest"])


def hold(submission_id: str, store: Store, digest: str) -> None:
    """Record the bundle as the submission's upload does (its artifact rows)."""
    manifest = store.get_manifest(digest)
    assert manifest is not None
    base = store.bundle_uri(digest)
    crud.add_artifacts(
        submission_id=submission_id,
        artifacts=[(base + name, m["size"], m["sha256"]) for name, m in manifest["files"].items()],
    )


def submission(
    status: Status,
    *,
    developer: str = "alice",
    name: str = "smol",
    age_s: float = 0.0,
    **values: Any,
) -> str:
    """A submission put straight into `status`, created and updated `age_s` seconds ago."""
    sub = crud.create_submission(developer=developer, source=f"org/{name}", display_name=name)
    with session_scope() as session:
        row = session.get(Submission, sub.id)
        assert row is not None
        row.status = status
        row.created_at = row.updated_at = utcnow() - timedelta(seconds=age_s)
        for key, value in values.items():
            setattr(row, key, value)
        session.add(row)
    return sub.id


def chat(submission_id: str, *, age_s: float) -> None:
    """A user's message and the model's reply, `age_s` seconds ago."""
    conv = conversations.start_conversation(
        mode=ConversationMode.beta, user_id="user-1", submission_id=submission_id
    )
    conversations.add_user_message(conversation_id=conv.id, content="hello")
    conversations.add_reply(
        conversation_id=conv.id, submission_id=submission_id, content="hi", ttft_ms=50.0
    )
    with session_scope() as session:
        for msg in session.exec(select(Message).where(Message.conversation_id == conv.id)):
            msg.created_at = utcnow() - timedelta(seconds=age_s)
            session.add(msg)


def stage_running(submission_id: str, stage: str, *, age_s: float) -> None:
    """A stage run that started `age_s` seconds ago and never ended."""
    run = crud.start_stage(submission_id=submission_id, stage=stage)
    with session_scope() as session:
        row = session.get(StageRun, run.id)
        assert row is not None
        row.started_at = utcnow() - timedelta(seconds=age_s)
        session.add(row)


def active_deployments(submission_id: str) -> list[Deployment]:
    with session_scope() as session:
        return list(
            session.exec(
                select(Deployment)
                .where(Deployment.submission_id == submission_id)
                .where(col(Deployment.active).is_(True))
            )
        )


def status_of(submission_id: str) -> Status:
    return Status(crud.require_submission(submission_id=submission_id).status)


def set_endpoint(submission_id: str, endpoint: str | None) -> None:
    """Published at `endpoint`, without moving `updated_at` (its idle clock)."""
    with session_scope() as session:
        row = session.get(Submission, submission_id)
        assert row is not None
        row.endpoint = endpoint
        session.add(row)
