"""The shape every testkit server shares: start, stop, and a `with` block around both."""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["LocalServer"]


class LocalServer:
    """A server on 127.0.0.1 that a `with` block starts and always stops."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
