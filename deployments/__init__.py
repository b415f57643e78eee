"""Serving backends: where a submitted model runs.

`get_backend(name)` returns one; all share the small `ServingBackend` interface.
"""

from __future__ import annotations

from deployments.base import BackendError, ServeSpec, ServingBackend, get_backend

__all__ = ["BackendError", "ServeSpec", "ServingBackend", "get_backend"]
