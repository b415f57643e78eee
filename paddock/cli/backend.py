"""Who answers a command: the API (`paddock.client`) or the database (`paddock.cli.local`),
with the same answers. Each is imported only when it is the one asked.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from paddock.cli import api_mode, fail

__all__ = ["Backend", "open_backend"]


class Backend(Protocol):
    def submit(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def list_submissions(self, *, limit: int = 100) -> list[dict[str, Any]]: ...
    def status(self, submission_id: str) -> dict[str, Any]: ...
    def deactivate(self, submission_id: str) -> dict[str, Any]: ...
    def teardown(self, submission_id: str) -> dict[str, Any]: ...
    def redeploy(self, submission_id: str) -> dict[str, Any]: ...
    def me(self) -> dict[str, Any]: ...
    def list_keys(self) -> list[dict[str, Any]]: ...
    def create_key(self) -> dict[str, Any]: ...
    def revoke_key(self, prefix: str) -> None: ...


@contextmanager
def open_backend(*, developer: str | None = None) -> Iterator[Backend]:
    """The API when PADDOCK_API_URL is set, else the database."""
    if not api_mode():
        from paddock.cli.local import Local

        yield Local(developer)
        return
    if developer is not None:
        fail("--developer works on the database only; the API acts as the key's developer")
    from paddock.client import from_settings

    with from_settings() as client:
        yield client
