"""A developer's own account: who the key belongs to, and the keys themselves."""

from __future__ import annotations

from fastapi import APIRouter, status

from paddock import accounts
from paddock.api.deps import CurrentDeveloper
from paddock.api.schemas import (
    DeveloperPublic,
    ErrorPublic,
    KeyCreated,
    KeyPublic,
    ValidationErrorPublic,
)

__all__ = ["router"]

router = APIRouter(
    prefix="/developers",
    tags=["developers"],
    responses={401: {"model": ErrorPublic, "description": "missing, unknown or revoked key"}},
)


@router.get("/me")
def read_developer_me(developer: CurrentDeveloper) -> DeveloperPublic:
    """The developer the request's API key belongs to."""
    return DeveloperPublic.from_row(developer)


@router.get("/me/keys")
def read_keys(developer: CurrentDeveloper) -> list[KeyPublic]:
    """Your API keys, oldest first, by prefix (a key itself is never shown again)."""
    return [KeyPublic.from_row(k) for k in accounts.list_keys(developer_id=developer.id)]


@router.post("/me/keys", status_code=status.HTTP_201_CREATED)
def create_key(developer: CurrentDeveloper) -> KeyCreated:
    """Issue a new API key; it is shown in this response only."""
    key = accounts.issue_key(developer_id=developer.id)
    return KeyCreated(prefix=key[: accounts.PREFIX_LENGTH], key=key)


@router.delete(
    "/me/keys/{prefix}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        404: {"model": ErrorPublic, "description": "no active key with that prefix"},
        422: {"model": ValidationErrorPublic, "description": "a malformed request"},
    },
)
def revoke_key(developer: CurrentDeveloper, prefix: str) -> None:
    """Revoke one of your keys by its prefix; requests made with it fail from now on."""
    accounts.revoke_key(developer_id=developer.id, prefix=prefix)
