"""Load the named blocks, seeding them from the environment on a fresh machine.

Environment variables are only seeds: once a block exists, the block is the configuration
(edit it in the Prefect UI or with `prefect block`), whatever the environment says.
"""

from __future__ import annotations

import time
from typing import TypeVar

from prefect.blocks.core import Block
from pydantic import SecretStr

from blocks.serving import ServingTarget
from blocks.source import ModelSource
from blocks.store import ModelStore
from paddock.config import get_settings

__all__ = ["model_source", "model_store", "serving_target", "SOURCE", "STORE", "SERVING"]

SOURCE = "paddock-source"
STORE = "paddock-store"
SERVING = "paddock-serving"

B = TypeVar("B", bound=Block)


def _load_or_seed(cls: type[B], name: str, seed: B, *, attempts: int = 6) -> B:
    """The block, or the seed saved as it. Two runs starting at once on a fresh server
    both find nothing and both save: the loser's save fails (the name, or the block type
    being registered by the winner at that moment) and the winner's document may not be
    readable yet, so the loser looks again a few times before giving up."""
    for attempt in range(attempts):
        try:
            return cls.load(name)  # type: ignore[return-value]
        except ValueError:
            pass  # not created yet, or not visible yet
        try:
            seed.save(name)
            return seed
        except Exception:  # another process is seeding it: look again shortly
            if attempt == attempts - 1:
                raise
            time.sleep(0.1 * 2**attempt)
    raise AssertionError("unreachable")


def _secret(value: str | None) -> SecretStr | None:
    return SecretStr(value) if value else None


def model_source(name: str = SOURCE) -> ModelSource:
    s = get_settings()
    return _load_or_seed(
        ModelSource,
        name,
        ModelSource(
            endpoint=s.hub_endpoint,
            token=_secret(s.hub_token),
            s3_endpoint_url=s.s3_endpoint_url,
            s3_access_key_id=s.s3_access_key_id,
            s3_secret_access_key=_secret(s.s3_secret_access_key),
        ),
    )


def model_store(name: str = STORE) -> ModelStore:
    s = get_settings()
    return _load_or_seed(
        ModelStore,
        name,
        ModelStore(
            url=s.store_url or str(s.home / "store"),
            endpoint_url=s.s3_endpoint_url,
            access_key_id=s.s3_access_key_id,
            secret_access_key=_secret(s.s3_secret_access_key),
        ),
    )


def serving_target(name: str = SERVING) -> ServingTarget:
    s = get_settings()
    return _load_or_seed(
        ServingTarget,
        name,
        ServingTarget(
            backend=s.serving_backend,
            serving_python=str(s.serving_python) if s.serving_python else None,
            local_copy=s.serve_local_copy,
        ),
    )
