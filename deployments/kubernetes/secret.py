"""The one Secret that carries the model store's S3 keys into a serving pod.

Credentials are never rendered into a manifest: the pod references ONE existing Secret
with three keys (their names are configurable)::

    access_key_id       the S3 access key      -> AWS_ACCESS_KEY_ID of the init container
    secret_access_key   the S3 secret key      -> AWS_SECRET_ACCESS_KEY of the init container
    s3cfg               an s3cmd-style file    -> ~/.s3cfg of the vLLM container, where
                        ("[default]\\naccess_key = …\\nsecret_key = …\\n")  tensorizer reads it

The backend only references the Secret; `s3_secret_manifest` renders it for an operator
to apply once per namespace.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from paddock.errors import ConfigurationError

from .naming import MANAGED_BY, MANAGED_BY_LABEL

__all__ = ["SecretKeys", "s3_secret_manifest"]


@dataclass(frozen=True)
class SecretKeys:
    """The key names inside the Secret; an existing Secret may use its own."""

    access_key_id: str = "access_key_id"
    secret_access_key: str = "secret_access_key"
    s3cfg: str = "s3cfg"

    @classmethod
    def with_overrides(cls, overrides: Mapping[str, str] | None) -> SecretKeys:
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(overrides or {}) - set(known))
        if unknown:
            raise ConfigurationError(
                f"unknown S3 Secret key role(s) {unknown}; the roles are {known}"
            )
        return cls(**dict(overrides or {}))


def s3_secret_manifest(
    name: str,
    namespace: str,
    access_key_id: str,
    secret_access_key: str,
    *,
    secret_keys: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The Secret layout the backend expects, for an operator to apply."""
    keys = SecretKeys.with_overrides(secret_keys)
    s3cfg = f"[default]\naccess_key = {access_key_id}\nsecret_key = {secret_access_key}\n"

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY},
        },
        "type": "Opaque",
        "data": {
            keys.access_key_id: b64(access_key_id),
            keys.secret_access_key: b64(secret_access_key),
            keys.s3cfg: b64(s3cfg),
        },
    }
