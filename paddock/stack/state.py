"""The state file, PADDOCK_HOME/stack/state.json: which parts run where, so any shell can
find, report and stop them, and whether an earlier `up` finished configuring Prefect.
Written whole (a temporary file renamed over it), never half.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from paddock.config import Settings, get_settings

from .processes import Part

__all__ = ["stack_dir", "state_path", "load", "save", "running"]


def stack_dir(settings: Settings) -> Path:
    return settings.home / "stack"


def state_path(settings: Settings | None = None) -> Path:
    return stack_dir(settings or get_settings()) / "state.json"


def load(settings: Settings) -> tuple[dict[str, Part], bool]:
    """The recorded parts and whether Prefect was fully configured by an earlier `up`."""
    try:
        data = json.loads(state_path(settings).read_text())
    except (OSError, ValueError):
        return {}, False
    parts = {name: Part(**value) for name, value in data.get("parts", {}).items()}
    return parts, bool(data.get("configured"))


def save(settings: Settings, parts: dict[str, Part], *, configured: bool) -> None:
    path = state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    body = {"parts": {n: asdict(p) for n, p in parts.items()}, "configured": configured}
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    os.replace(tmp, path)


def running(settings: Settings | None = None) -> dict[str, Part]:
    """The recorded parts whose processes are still alive."""
    parts, _ = load(settings or get_settings())
    return {name: part for name, part in parts.items() if part.alive()}
