"""Stage 3: write the tensorizer bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from paddock.bundle import write_bundle
from paddock.config import get_settings
from tasks.stage import stage

__all__ = ["serialize"]


def _present(submission_id: str, output: dict[str, Any]) -> bool:
    return (Path(output.get("path", "")) / "model.tensors").is_file()


@stage("serialize", retries=1, still_valid=_present)
def serialize(submission_id: str, snapshot: dict[str, Any]) -> dict[str, Any]:
    dest = get_settings().work_dir / submission_id / "bundle"
    return write_bundle(Path(snapshot["path"]), dest)
