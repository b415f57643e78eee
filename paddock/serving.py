"""Finding and stopping a submission's running deployment, from any process.

The handle stored when the deployment started is enough: the backend named by the serving
target can check or stop it without the process that started it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from paddock import crud
from paddock.config import get_settings

if TYPE_CHECKING:
    from deployments import ServingBackend

__all__ = ["current_backend", "stop_serving", "dead_server_log", "head_start", "drop_head_start"]

log = logging.getLogger(__name__)


def current_backend() -> ServingBackend:
    from blocks import serving_target  # configuration, loaded only when serving is touched

    return serving_target().open(log_dir=get_settings().log_dir)


def head_start(submission_id: str) -> None:
    """Start what the submission's server needs before its bundle exists, where the
    backend can (the local one: a spare interpreter importing vLLM while the bundle is
    serialized and uploaded). A head start that fails costs the run nothing: its deploy
    starts the server the ordinary way."""
    try:
        prestart = getattr(current_backend(), "prestart", None)
        if prestart is not None:
            prestart(submission_id)
    except Exception:
        log.warning("no head start for %s's server", submission_id, exc_info=True)


def drop_head_start(submission_id: str) -> None:
    """End a head start the run did not use (it failed before deploy, or deployed
    without it)."""
    from deployments import spares

    spares.discard(submission_id)


def stop_serving(submission_id: str) -> bool:
    """Stop the submission's active deployment, if any; True when one was stopped.

    The handle names everything to stop, so this needs neither the serving-target block
    nor a Prefect API: `paddock teardown` works from any shell.
    """
    from deployments import get_backend

    dep = crud.active_deployment(submission_id=submission_id)
    if dep is None or dep.id is None:
        return False
    get_backend(dep.backend).stop(dep.handle)
    crud.close_deployment(deployment_id=dep.id)
    return True


def dead_server_log(submission_id: str, *, lines: int = 30) -> str | None:
    """The log tail of the submission's server if it has died, else None.

    When an endpoint stops answering, the reason a person needs is in the server's log
    (an out-of-memory kill, an engine crash), not in the connection error.
    """
    from deployments import get_backend

    dep = crud.active_deployment(submission_id=submission_id)
    if dep is None:
        return None
    backend = get_backend(dep.backend)
    if backend.status(dep.handle) != "dead":
        return None
    return backend.logs(dep.handle, lines=lines)
