"""Developers and their API keys.

A key is shown once, when it is issued; only its SHA-256 is kept, so a copy of the
database cannot be used to call the API. The short prefix lets a person tell keys apart
(and revoke one) without ever seeing the rest again.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from paddock.db import session_scope
from paddock.errors import NotFound, Rejected, Unauthorized
from paddock.models import ApiKey, Developer, utcnow

__all__ = [
    "KEY_SCHEME",
    "PREFIX_LENGTH",
    "create_developer",
    "get_developer",
    "find_developer",
    "issue_key",
    "authenticate",
    "revoke_key",
    "list_keys",
]

KEY_SCHEME = "pdk_"  # recognisable in a leaked file or a secret scanner's rule
PREFIX_LENGTH = len(KEY_SCHEME) + 8
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_developer(*, name: str) -> Developer:
    if not _NAME.fullmatch(name):
        raise Rejected(f"developer name {name!r} must be 1–64 letters, digits, '_', '.' or '-'")
    taken = Rejected(f"developer name {name!r} is taken; choose another")
    if _by_name(name) is not None:
        raise taken
    developer = Developer(name=name)
    try:
        with session_scope() as session:
            session.add(developer)
    except IntegrityError as exc:  # created by someone else since the check above
        raise taken from exc
    return developer


def _by_name(name: str) -> Developer | None:
    with session_scope() as session:
        return session.exec(select(Developer).where(Developer.name == name)).first()


def get_developer(*, developer_id: str) -> Developer:
    with session_scope() as session:
        developer = session.get(Developer, developer_id)
    if developer is None:
        raise NotFound(f"no developer {developer_id!r}")
    return developer


def find_developer(*, name: str) -> Developer:
    developer = _by_name(name)
    if developer is None:
        raise NotFound(f"no developer named {name!r}; `paddock developer create` adds one")
    return developer


def issue_key(*, developer_id: str) -> str:
    """A new key for the developer; the only time its plaintext exists outside the caller."""
    get_developer(developer_id=developer_id)
    key = KEY_SCHEME + secrets.token_urlsafe(32)
    with session_scope() as session:
        session.add(
            ApiKey(developer_id=developer_id, prefix=key[:PREFIX_LENGTH], key_hash=_digest(key))
        )
    return key


def authenticate(*, key: str) -> Developer:
    digest = _digest(key)
    with session_scope() as session:
        row = session.exec(select(ApiKey).where(ApiKey.key_hash == digest)).first()
        # The lookup is by hash, so its timing says nothing about the key; the compare
        # keeps it that way should the lookup ever become a scan or a prefix match.
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            raise Unauthorized("unknown API key; `paddock login` stores a valid one")
        if row.revoked_at is not None:
            raise Unauthorized(f"API key {row.prefix}… was revoked; ask for a new one")
        developer = session.get(Developer, row.developer_id)
    if developer is None:
        raise Unauthorized("this API key's developer no longer exists")
    return developer


def revoke_key(*, developer_id: str, prefix: str) -> None:
    with session_scope() as session:
        rows = list(
            session.exec(
                select(ApiKey).where(
                    ApiKey.developer_id == developer_id,
                    ApiKey.prefix == prefix,
                    col(ApiKey.revoked_at).is_(None),
                )
            )
        )
        if not rows:
            raise NotFound(f"no active key {prefix!r}; `paddock keys list` shows yours")
        for row in rows:
            row.revoked_at = utcnow()
            session.add(row)


def list_keys(*, developer_id: str) -> list[ApiKey]:
    with session_scope() as session:
        return list(
            session.exec(
                select(ApiKey)
                .where(ApiKey.developer_id == developer_id)
                .order_by(col(ApiKey.created_at))
            )
        )
