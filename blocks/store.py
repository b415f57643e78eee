"""Where serialized tensors go: a local directory or an S3 bucket/prefix."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from paddock.storage import Store, open_store

__all__ = ["ModelStore"]


class ModelStore(Block):
    _block_type_name = "Paddock Model Store"
    _description = "The model store: `s3://bucket/prefix` or a local directory."

    url: str = Field(description="`s3://bucket/prefix` or an absolute directory path.")
    endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint URL.")
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    region: str = "us-east-1"
    # costs (paddock costs); 0 by default. S3 Standard lists about 0.023 USD per GB-month.
    storage_price_usd_per_gb_month: float = Field(
        default=0.0, ge=0, description="USD per GiB stored for a month (730 hours)."
    )

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")

    def open(self) -> Store:
        if not self.is_s3:
            return open_store(self.url)
        return open_store(
            self.url,
            endpoint_url=self.endpoint_url,
            access_key_id=self.access_key_id,
            secret_access_key=(
                self.secret_access_key.get_secret_value() if self.secret_access_key else None
            ),
            region=self.region,
        )
