"""Point the paddock blocks at the servers a test uses (saved over the defaults)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr

from blocks import ModelSource, ModelStore, ServingTarget
from blocks.defaults import SERVING, SOURCE, STORE


def use_hub(hub: Any, s3: Any | None = None) -> None:
    ModelSource(
        endpoint=hub.endpoint,
        s3_endpoint_url=s3.endpoint if s3 else None,
        s3_access_key_id=s3.access_key if s3 else None,
        s3_secret_access_key=SecretStr(s3.secret_key) if s3 else None,
    ).save(SOURCE, overwrite=True)


def use_s3_store(s3: Any, prefix: str) -> ModelStore:
    block = ModelStore(
        url=f"s3://models/{prefix}",
        endpoint_url=s3.endpoint,
        access_key_id=s3.access_key,
        secret_access_key=SecretStr(s3.secret_key),
    )
    block.save(STORE, overwrite=True)
    return block


def use_local_store(root: Path) -> ModelStore:
    block = ModelStore(url=str(root))
    block.save(STORE, overwrite=True)
    return block


def use_serving(**overrides: Any) -> ServingTarget:
    block = ServingTarget(backend="local", stress_profile="smoke", ready_timeout_s=240, **overrides)
    block.save(SERVING, overwrite=True)
    return block
