"""Prefect blocks: the infrastructure configuration platform engineers edit in the UI.

`model_source()`, `model_store()` and `serving_target()` load the named block, creating it
from the environment's defaults (paddock.config.Settings) the first time.
"""

from __future__ import annotations

from blocks.defaults import model_source, model_store, serving_target
from blocks.serving import ServingTarget
from blocks.source import ModelSource
from blocks.store import ModelStore

__all__ = [
    "ModelSource",
    "ModelStore",
    "ServingTarget",
    "model_source",
    "model_store",
    "serving_target",
]
