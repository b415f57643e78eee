"""Process settings, read once from the environment.

Infrastructure choices (hub, store, serving target) live in Prefect blocks; these settings
only seed those blocks on a fresh machine and say where paddock keeps its own files.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings", "reset_settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PADDOCK_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".paddock")
    database_url: str | None = None
    # HMAC key for user ids (paddock.privacy); unset: a random key kept in HOME/user-hash.key.
    user_hash_secret: SecretStr | None = None
    # Seeds for the blocks (used only when a block does not exist yet).
    hub_endpoint: str | None = Field(default=None, validation_alias="HF_ENDPOINT")
    hub_token: str | None = Field(default=None, validation_alias="HF_TOKEN")
    store_url: str | None = None  # "s3://bucket/prefix" or a directory; default: HOME/store
    s3_endpoint_url: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    serving_backend: Literal["local", "kubernetes"] = "local"
    serving_python: Path | None = None  # python of the serving environment (.venv-serving)
    # Local-directory sources are refused unless they sit under one of these roots.
    allowed_source_dirs: list[Path] = Field(default_factory=list)
    allow_custom_code: bool = False
    allow_pickle: bool = False
    max_parameters: int = 15_000_000_000
    max_model_bytes: int = 40 * 1024**3
    retry_base_seconds: float = 2.0  # first retry delay; doubles per attempt
    # The leaderboard ranks a model once it has this many counted votes (or battles).
    leaderboard_min_votes: int = Field(default=20, ge=1)
    leaderboard_bootstrap_rounds: int = Field(default=1000, ge=10)
    # Chat side: the router sends users to the model furthest from this many ratings; a
    # model marked down is probed (GET /health) at most every `router_reprobe_s`.
    router_target_feedback: int = 20
    router_probe_timeout_s: float = 1.0
    router_reprobe_s: float = 2.0
    relay_connect_timeout_s: float = 5.0
    relay_read_timeout_s: float = 60.0  # the longest silence inside a reply's stream
    # The CLI talks to this API (with PADDOCK_API_KEY or the key `paddock login` stored)
    # instead of the database when it is set.
    api_url: str | None = None
    api_key: SecretStr | None = None
    # Maintenance (flows/maintenance.py). Cleanup, hourly: a deployed model nobody has
    # chatted with for `idle_hours` is made inactive; a submission whose stages have shown
    # no activity for `stuck_minutes` is failed. Archive, daily: per (developer, display
    # name) the newest `keep_bundles` bundles stay; older ones go to the store's archive
    # and are deleted `archive_grace_days` later.
    idle_hours: float = Field(default=24.0, gt=0)
    stuck_minutes: float = Field(default=60.0, gt=0)
    keep_bundles: int = Field(default=3, ge=1)
    archive_grace_days: float = Field(default=30.0, ge=0)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'paddock.db'}"

    @property
    def work_dir(self) -> Path:
        return self.home / "work"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def source_roots(self) -> list[Path]:
        return [p.resolve() for p in (self.allowed_source_dirs or [self.home / "sources"])]


@functools.cache
def get_settings() -> Settings:
    settings = Settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    # Each paddock home carries its own Prefect home (blocks, ephemeral database) unless
    # the operator points Prefect elsewhere: a fresh home is a fresh machine.
    os.environ.setdefault("PREFECT_HOME", str(settings.home / "prefect"))
    return settings


def reset_settings() -> None:
    """Forget cached settings (tests change the environment between cases)."""
    get_settings.cache_clear()
