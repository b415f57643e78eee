"""Where submitted models come from: a Hugging Face-compatible hub (and its token)."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

__all__ = ["ModelSource"]


class ModelSource(Block):
    _block_type_name = "Paddock Model Source"
    _description = "A Hugging Face hub (or a mirror) that submissions are downloaded from."

    endpoint: str | None = Field(
        default=None, description="Hub URL; empty means https://huggingface.co."
    )
    token: SecretStr | None = Field(default=None, description="Hub token for private repos.")
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 endpoint for `s3://` sources (empty: AWS)."
    )
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
