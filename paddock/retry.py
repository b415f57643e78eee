"""The one retry policy: which faults are worth another try, and how long to wait.

Pipeline stages hand the policy to Prefect (`retried_task`), so every retry
is a visible `AwaitingRetry` state in the UI; code that is not a task (Kubernetes API
calls, the chat relay's probes) runs the same policy in-process with `RetryPolicy.call`.
Both wait the same exponential delays with the same jitter (Prefect's clamped Poisson
interval), and both retry only what `is_transient` says may pass: a `Rejected` submission,
a wrong setting and a plain programming error (`TypeError`, `KeyError`, …) fail at once.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from paddock.errors import PaddockError, TransientError

if TYPE_CHECKING:
    from prefect import Task

__all__ = ["RetryPolicy", "is_transient", "retry_condition", "stage_policy", "retried_task"]

T = TypeVar("T")
P = ParamSpec("P")
log = logging.getLogger(__name__)

_RETRYABLE_STATUS = frozenset({0, 408, 425, 429, 500, 502, 503, 504})
_THROTTLED_S3_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
     "ServiceUnavailable", "RequestTimeTooSkewed"}
)  # fmt: skip


def is_transient(exc: BaseException) -> bool:
    """True for faults that may pass by themselves: the network, a busy server, the DB."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, PaddockError):
        return False  # rejected, misconfigured, not found, illegal: retrying cannot help
    if isinstance(exc, ConnectionError | TimeoutError | socket.gaierror):
        return True
    return _third_party_transient(exc)


def _third_party_transient(exc: BaseException) -> bool:
    """The network and server errors of the clients paddock uses, by their own types."""
    import httpx

    if isinstance(exc, httpx.TransportError):
        return True
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in _RETRYABLE_STATUS
    try:
        from botocore.exceptions import ClientError, HTTPClientError
        from botocore.exceptions import ConnectionError as BotoConnectionError
    except ImportError:  # pragma: no cover - boto3 is a dependency
        pass
    else:
        if isinstance(exc, HTTPClientError | BotoConnectionError):
            return True  # a reset, a refused connection (EndpointConnectionError), a timeout
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            return error.get("Code") in _THROTTLED_S3_CODES or int(status) >= 500
    from sqlalchemy.exc import OperationalError

    if isinstance(exc, OperationalError):
        return True  # the database is briefly unavailable or locked
    from urllib3.exceptions import HTTPError as Urllib3Error

    if isinstance(exc, Urllib3Error):
        return True
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        return int(exc.status or 0) in _RETRYABLE_STATUS
    return False


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: try, wait base, 2·base, 4·base … (capped)."""

    retries: int = 3
    base_seconds: float = 2.0
    max_seconds: float = 60.0
    jitter: float = 0.5  # a delay varies up to ±this fraction (Prefect's clamping factor)

    def delays(self) -> list[float]:
        """The nominal wait before each retry (jitter is added when waiting)."""
        return [min(self.base_seconds * 2**i, self.max_seconds) for i in range(self.retries)]

    def delay(self, retry: int) -> float:
        """The jittered wait before retry number ``retry`` (0-based)."""
        from prefect.utilities.math import clamped_poisson_interval

        nominal = self.delays()[retry]
        return clamped_poisson_interval(nominal, self.jitter) if self.jitter > 0 else nominal

    def call(
        self,
        fn: Callable[[], T],
        *,
        what: str,
        on_retry: Callable[[int, BaseException, float], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> T:
        """Run ``fn`` under this policy in this process; re-raise what is not transient."""
        for retry in range(self.retries + 1):
            try:
                return fn()
            except Exception as exc:
                if retry == self.retries or not is_transient(exc):
                    raise
                wait = self.delay(retry)
                if on_retry is not None:
                    on_retry(retry + 1, exc, wait)
                else:
                    log.warning("%s failed (%s); retry %d in %.1f s", what, exc, retry + 1, wait)
                sleep(wait)
        raise AssertionError("unreachable")


def retry_condition(task: object, task_run: object, state: Any) -> bool:
    """Prefect asks this after a failed attempt: retry only what may pass by itself."""
    try:
        state.result()
    except Exception as exc:
        return is_transient(exc)
    return False


def stage_policy(retries: int) -> RetryPolicy:
    """The policy for a pipeline stage, with the configured first delay."""
    from paddock.config import get_settings

    return RetryPolicy(retries=retries, base_seconds=get_settings().retry_base_seconds)


def retried_task(
    name: str, policy: RetryPolicy, *, timeout_seconds: float | None = None
) -> Callable[[Callable[P, T]], Task[P, T]]:
    """A Prefect task decorator that retries under ``policy`` (results never cached: a
    stage's output is its timeline row, and a re-run decides afresh what to redo)."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    return task(
        name=name,
        retries=policy.retries,
        retry_delay_seconds=policy.delays() or 0,
        retry_jitter_factor=policy.jitter if policy.jitter > 0 else None,
        retry_condition_fn=retry_condition,
        timeout_seconds=timeout_seconds,
        persist_result=False,
        cache_policy=NO_CACHE,
    )
