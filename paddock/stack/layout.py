"""Where the stack's parts are and what they are called: the names `up` registers in
Prefect, the order the parts start in, and the URLs each is reached at.

Kept apart from the code that starts anything, so the CLI can print a URL (and a test
can name an automation) without importing process or Prefect machinery.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from paddock.config import Settings, get_settings
from paddock.errors import PaddockError

__all__ = [
    "REPO",
    "POOL",
    "WORKER",
    "HOOK_BLOCK",
    "BREACH_AUTOMATION",
    "NOTIFY_AUTOMATION",
    "DEPLOYMENT",
    "ORDER",
    "DESCRIBE",
    "StackError",
    "Urls",
    "urls",
]

REPO = Path(__file__).resolve().parents[2]
POOL = "paddock"
WORKER = "paddock-worker"
HOOK_BLOCK = "paddock-sla-hook"
BREACH_AUTOMATION = "submission-missed-sla"
NOTIFY_AUTOMATION = "submission-sla-breached-notify"
DEPLOYMENT = "submission/submission"
# Start order; `down` stops them the other way round (the worker while its server still
# answers, so it can let go of its runs cleanly).
ORDER = ("server", "launcher", "worker", "api", "spares")
DESCRIBE = {
    "server": "the Prefect server",
    "launcher": "the flow-run launcher",
    "worker": "the worker",
    "api": "the paddock API",
    "spares": "the spare keeper",
}


class StackError(PaddockError):
    """The stack could not be brought up (or down); the message names what and where."""


@dataclass(frozen=True)
class Urls:
    prefect_api: str
    prefect_ui: str
    api: str
    hook: str


def urls(settings: Settings | None = None) -> Urls:
    settings = settings or get_settings()
    host = settings.stack_host
    # A server listening on every interface is still called on the loopback one.
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    ui = f"http://{local}:{settings.prefect_port}"
    api = f"http://{local}:{settings.api_port}"
    return Urls(prefect_api=f"{ui}/api", prefect_ui=ui, api=api, hook=f"{api}/hooks/sla-breach")
