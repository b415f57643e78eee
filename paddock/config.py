"""Process settings, read once from the environment.

Infrastructure choices (hub, store, serving target) live in Prefect blocks; these settings
only seed those blocks on a fresh machine and say where paddock keeps its own files.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from pathlib import Path
from typing import Any, Literal, get_origin

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from paddock.errors import ConfigurationError

__all__ = ["Settings", "get_settings", "reset_settings", "settings_or_exit"]


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
    # With an S3 store, a local server maps the bundle its run serialized on this machine
    # (and the upload runs beside its deploy); false: it streams the tensors from S3.
    serve_local_copy: bool = True
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
    # Rate limits (paddock/api/limits.py), token buckets kept by each API process: up to
    # `burst` requests at once, refilled at the rate; a rate of 0 turns that limit off.
    # Submissions per developer; chat requests (starts, messages, regenerations,
    # completions) per user; conversation starts per client address.
    rate_submissions_per_hour: float = Field(default=30.0, ge=0)
    rate_submissions_burst: int = Field(default=10, ge=1)
    rate_chat_per_minute: float = Field(default=60.0, ge=0)
    rate_chat_burst: int = Field(default=60, ge=1)
    rate_starts_per_minute_per_ip: float = Field(default=120.0, ge=0)
    rate_starts_burst: int = Field(default=60, ge=1)
    # The CLI talks to this API (with PADDOCK_API_KEY or the key `paddock login` stored)
    # instead of the database when it is set.
    api_url: str | None = None
    api_key: SecretStr | None = None
    # The platform stack (`paddock up`) and the SLA it enforces. The clock starts when a
    # submission is accepted; Prefect's proactive automations need at least 10 s.
    sla_seconds: int = Field(default=300, ge=10)
    # Shared with the SLA automation's webhook; unset: a random one in HOME/hook-secret.key.
    hook_secret: SecretStr | None = None
    # "auto": through the `submission` deployment when PREFECT_API_URL names a server that
    # has it, else a child process; "deployment" / "embedded" force one or the other.
    dispatch: Literal["auto", "deployment", "embedded"] = "auto"
    stack_host: str = "127.0.0.1"
    prefect_port: int = 4200
    api_port: int = 8321
    # A Prefect notification block ("slack-webhook/on-call") told of every SLA breach.
    sla_notify_block: str | None = None
    # How many deployed models a developer may have at once (0: no limit; 1 is the rule of
    # one live model per developer): publishing one more retires the oldest, atomically.
    max_deployed_per_developer: int = Field(default=0, ge=0)
    # Maintenance (flows/maintenance.py). Cleanup, hourly: a deployed model nobody has
    # chatted with for `idle_hours` is parked at zero replicas where its backend can
    # (Kubernetes, min_replicas 0) and made inactive otherwise; a submission whose stages have shown
    # no activity for `stuck_minutes` is failed. Archive, daily: per (developer, display
    # name) the newest `keep_bundles` bundles stay; older ones go to the store's archive
    # and are deleted `archive_grace_days` later.
    idle_hours: float = Field(default=24.0, gt=0)
    stuck_minutes: float = Field(default=60.0, gt=0)
    keep_bundles: int = Field(default=3, ge=1)
    archive_grace_days: float = Field(default=30.0, ge=0)
    # One flow run per submission (paddock/leases.py): the running one refreshes its lease
    # every third of this; a lease not refreshed for this long is a dead run's, and the
    # next run may take it over.
    lease_stale_seconds: float = Field(default=90.0, gt=0)

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
    """The process's settings; a malformed environment variable is a `ConfigurationError`
    naming the variable and what it accepts (an operator reads it, not a programmer)."""
    try:
        settings = Settings()
    except (ValidationError, SettingsError) as exc:
        raise ConfigurationError(_explain_settings(exc)) from None
    settings.home.mkdir(parents=True, exist_ok=True)
    # Each paddock home carries its own Prefect home (blocks, ephemeral database) unless
    # the operator points Prefect elsewhere: a fresh home is a fresh machine.
    os.environ.setdefault("PREFECT_HOME", str(settings.home / "prefect"))
    # A fresh ephemeral Prefect sets its database up first; on a busy small machine that
    # outlasts Prefect's default 20 s wait, and the process would die before its flow.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    return settings


def reset_settings() -> None:
    """Forget cached settings (tests change the environment between cases)."""
    get_settings.cache_clear()


def settings_or_exit() -> Settings:
    """For a process's entry point (`python -m flows.…`): a bad setting ends it with one
    sentence on stderr and status 2, before any framework can turn it into a traceback."""
    try:
        return get_settings()
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


# What a setting accepts, said for the person editing the environment; keyed by pydantic's
# error type (its own messages speak of "Input" and link to its docs).
_ACCEPTS = {
    "float_parsing": "a number",
    "float_type": "a number",
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "bool_parsing": "true or false (or 1/0, yes/no, on/off)",
    "bool_type": "true or false (or 1/0, yes/no, on/off)",
    "path_type": "a path",
}
# Values of these settings are never repeated in a message: it may end up in a log.
_SECRET_WORDS = ("secret", "token", "key", "password")


def _env_name(field: str) -> str:
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    return alias if isinstance(alias, str) else f"PADDOCK_{field.upper()}"


def _shown(env: str, value: Any) -> str:
    if any(word in env.lower() for word in _SECRET_WORDS):
        return " (value not shown)"
    given = repr(value)
    return f" (got {given if len(given) <= 60 else given[:57] + '...'})"


def _explain_settings(exc: ValidationError | SettingsError) -> str:
    """One sentence naming each bad environment variable and what it accepts."""
    parts: list[str] = []
    if isinstance(exc, SettingsError):
        # Raised before validation, for a setting read as JSON that is not JSON.
        found = re.search(r'field "(\w+)"', str(exc))
        field = found.group(1) if found else ""
        env = _env_name(field) if field else "a setting"
        info = Settings.model_fields.get(field)
        listed = info is not None and get_origin(info.annotation) is list
        accepts = 'a JSON list, e.g. ["/srv/models"]' if listed else "JSON"
        parts.append(f"{env} should be {accepts}{_shown(env, os.environ.get(env, ''))}")
    else:
        for err in exc.errors():
            field, *inner = (str(p) for p in err["loc"])
            env = _env_name(field) + "".join(f"[{i}]" for i in inner)
            kind = str(err["type"])
            if kind == "literal_error":
                accepts = str(err.get("ctx", {}).get("expected", "one of its choices"))
            else:
                msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Input ")
                accepts = _ACCEPTS.get(kind) or msg.removeprefix("should be ")
            parts.append(f"{env} should be {accepts}{_shown(env, err.get('input'))}")
    return f"invalid environment setting — {'; '.join(parts)}: correct it or unset it"
