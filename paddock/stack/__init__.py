"""The running platform on one machine: `paddock up` and `paddock down`.

Three long-lived parts — a Prefect server (API, UI, automations), a worker of the
`paddock` process work pool, and the paddock API/web (`paddock serve`) — each run as a
detached process group whose pid and log are written to PADDOCK_HOME/stack/state.json,
so any shell can find, report and stop them. Between starting them, `up` registers what
lives inside Prefect: the work pool, the deployments of `prefect.yaml`, the webhook block
the SLA automation calls, and the automations of `ops/automations.yaml`.

`layout` names things, `processes` and `state` keep track of the parts, `parts` starts
each one, `registration` and `automations` configure Prefect, `control` is up and down.
"""

from __future__ import annotations

from .control import Report, Row, down, up
from .layout import (
    BREACH_AUTOMATION,
    HOOK_BLOCK,
    NOTIFY_AUTOMATION,
    POOL,
    REPO,
    WORKER,
    StackError,
    Urls,
    urls,
)
from .processes import Part
from .state import running, state_path

__all__ = [
    "REPO",
    "POOL",
    "WORKER",
    "HOOK_BLOCK",
    "BREACH_AUTOMATION",
    "NOTIFY_AUTOMATION",
    "StackError",
    "Part",
    "Row",
    "Report",
    "Urls",
    "urls",
    "up",
    "down",
    "running",
    "state_path",
]
