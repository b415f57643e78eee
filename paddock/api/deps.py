"""What a route may ask for: the developer whose API key came with the request."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from paddock import accounts
from paddock.errors import Unauthorized
from paddock.models import Developer

__all__ = ["CurrentDeveloper", "current_developer"]

# auto_error=False: a missing key is answered by paddock's own 401 (one sentence, with
# `WWW-Authenticate: Bearer`), not FastAPI's 403.
_bearer = HTTPBearer(
    auto_error=False,
    description="A developer's API key (`paddock developer create` prints the first one).",
)


def current_developer(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Developer:
    if credentials is None:
        raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
    return accounts.authenticate(key=credentials.credentials)


CurrentDeveloper = Annotated[Developer, Depends(current_developer)]
