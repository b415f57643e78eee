"""A thin client for the paddock API, and where `paddock login` keeps a developer's key.

Errors come back as the paddock exceptions the server raised (by status code), carrying
the server's one sentence, so the CLI says the same thing whether it ran a command itself
or asked the API to.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

from paddock import __version__
from paddock.config import get_settings
from paddock.errors import (
    ConfigurationError,
    IllegalTransition,
    NotFound,
    PaddockError,
    Rejected,
    TransientError,
    Unauthorized,
)

__all__ = [
    "ApiClient",
    "from_settings",
    "credentials_path",
    "save_credentials",
    "load_credentials",
    "forget_credentials",
]

_ERRORS: dict[int, type[PaddockError]] = {
    400: Rejected,
    401: Unauthorized,
    404: NotFound,
    409: IllegalTransition,
    422: Rejected,
    500: ConfigurationError,
    503: TransientError,
}


class ApiClient:
    """One HTTP client for one API and one key; use it as a context manager."""

    def __init__(
        self,
        url: str,
        key: str | None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"User-Agent": f"paddock-cli/{__version__}"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- submissions
    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._dict("POST", "/submissions", json=body)

    def list_submissions(self, *, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._call("GET", "/submissions", params={"limit": limit})
        return list(rows)

    def status(self, submission_id: str) -> dict[str, Any]:
        return self._dict("GET", _sub(submission_id))

    def deactivate(self, submission_id: str) -> dict[str, Any]:
        return self._dict("POST", _sub(submission_id, "deactivate"))

    def teardown(self, submission_id: str) -> dict[str, Any]:
        return self._dict("POST", _sub(submission_id, "teardown"))

    def redeploy(self, submission_id: str) -> dict[str, Any]:
        return self._dict("POST", _sub(submission_id, "redeploy"))

    # -- the developer's own account
    def me(self) -> dict[str, Any]:
        return self._dict("GET", "/developers/me")

    def list_keys(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/developers/me/keys"))

    def create_key(self) -> dict[str, Any]:
        return self._dict("POST", "/developers/me/keys")

    def revoke_key(self, prefix: str) -> None:
        self._call("DELETE", f"/developers/me/keys/{quote(prefix, safe='')}")

    # -- any other route (other command modules' resources)
    def get(self, path: str, *, params: dict[str, Any] | None = None) -> Any:
        """The JSON body of `GET path`; errors as for every route."""
        return self._call("GET", path, params=params)

    def post(self, path: str, *, json: Any = None) -> Any:
        """The JSON body of `POST path` (None for an empty answer)."""
        return self._call("POST", path, json=json)

    # -- plumbing
    def _dict(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        body = self._call(method, path, **kwargs)
        if not isinstance(body, dict):
            raise TransientError(f"{self.url}{path} answered {body!r}, not a JSON object")
        return body

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise TransientError(f"cannot reach the paddock API at {self.url} ({exc})") from exc
        if response.is_success:
            return response.json() if response.content else None
        raise self._error(response)

    def _error(self, response: httpx.Response) -> PaddockError:
        detail: Any = None
        try:
            detail = response.json().get("detail")
        except (ValueError, AttributeError):
            pass
        kind = _ERRORS.get(response.status_code)
        if kind is None:
            kind = TransientError if response.status_code >= 500 else PaddockError
        if not isinstance(detail, str) or not detail:
            # Not paddock's answer: a proxy, or PADDOCK_API_URL names some other server.
            detail = (
                f"{self.url} answered {response.status_code} {response.reason_phrase} "
                f"to {response.request.method} {response.request.url.path}; "
                "is PADDOCK_API_URL a paddock API?"
            )
        return kind(detail)


def _sub(submission_id: str, action: str = "") -> str:
    path = f"/submissions/{quote(submission_id, safe='')}"
    return f"{path}/{action}" if action else path


def from_settings() -> ApiClient:
    """A client for PADDOCK_API_URL with PADDOCK_API_KEY, else the key `paddock login` stored."""
    settings = get_settings()
    if not settings.api_url:
        raise ConfigurationError("PADDOCK_API_URL is not set; it names the paddock API to use")
    key = key_for(settings.api_url)
    if key is None:
        raise Unauthorized(
            f"no API key for {settings.api_url}: run `paddock login` or set PADDOCK_API_KEY"
        )
    return ApiClient(settings.api_url, key)


def key_for(api_url: str) -> str | None:
    """The environment's key, else the stored one — only if it was stored for this API, so a
    key is never sent to a server it was not issued by."""
    settings = get_settings()
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    stored = load_credentials()
    if stored and _same(stored.get("api_url"), api_url) and isinstance(stored.get("key"), str):
        return str(stored["key"])
    return None


def _same(a: object, b: str) -> bool:
    return isinstance(a, str) and a.rstrip("/") == b.rstrip("/")


def credentials_path() -> Path:
    return get_settings().home / "credentials.json"


def save_credentials(*, api_url: str, key: str, developer: str) -> Path:
    """Write the key readable by its owner only, whole or not at all."""
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = {"api_url": api_url.rstrip("/"), "developer": developer, "key": key}
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)  # O_CREAT's mode does not apply to a file that already existed
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_credentials() -> dict[str, Any] | None:
    path = credentials_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise ConfigurationError(f"{path} is not valid JSON; `paddock logout` removes it") from exc
    return data if isinstance(data, dict) else None


def forget_credentials() -> dict[str, Any] | None:
    """Remove the stored key; returns what was stored (without a key) or None."""
    stored = load_credentials()
    credentials_path().unlink(missing_ok=True)
    if stored is None:
        return None
    return {k: v for k, v in stored.items() if k != "key"}
