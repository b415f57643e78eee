"""What `up` registers inside Prefect beside the automations: the `paddock` process work
pool, the deployments of prefect.yaml, and the check that the worker reached the server.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from .layout import DEPLOYMENT, POOL, REPO, WORKER, StackError, Urls
from .processes import Part, tail

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

__all__ = ["prefect_client", "pool_template", "ensure_pool", "deploy", "wait_worker"]


@contextmanager
def prefect_client(url: Urls) -> Iterator[SyncPrefectClient]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url.prefect_api}):
        with get_client(sync_client=True) as client:
            yield client


# The flow-run commands an `up` has named, newest first: an older one is brought in line.
_OWN_COMMANDS = ("paddock.launch", "prefect.engine")


def pool_template(python: str = sys.executable, module: str = _OWN_COMMANDS[0]) -> dict[str, Any]:
    """Prefect's process template, with the flow-run command named: ``python -m
    paddock.launch`` (this interpreter's, unless told), which forks the run from the
    stack's launcher — an interpreter that has imported Prefect and the stages' libraries
    already — and becomes ``python -m prefect.engine`` itself where there is none.

    Left unnamed, Prefect 3.8's process worker starts each run through a workspace
    supervisor — a Python process that imports Prefect, runs the deployment's pull steps
    and then execs the engine, which imports Prefect again — to support per-run dependency
    installs that paddock's deployments do not use. Named, the worker starts the command
    directly and the engine runs the pull steps itself.
    """
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    command = template["variables"]["properties"]["command"]
    command["default"] = shlex.join([python, "-m", module])
    return template


def _paddocks_own(template: dict[str, Any]) -> bool:
    """Whether an `up` made this template — Prefect's stock one, or :func:`pool_template`
    for some interpreter (a venv since moved) and one of the commands `up` has named —
    rather than an operator, whose changes `up` must not undo."""
    from prefect.workers.process import ProcessWorker

    try:
        command = template["variables"]["properties"]["command"]["default"]
        argv = shlex.split(command) if command is not None else None
    except (KeyError, TypeError, ValueError):
        return False
    if argv is None:
        return template == ProcessWorker.get_default_base_job_template()
    if len(argv) != 3 or argv[1] != "-m" or argv[2] not in _OWN_COMMANDS:
        return False
    return template == pool_template(argv[0], argv[2])


def ensure_pool(client: SyncPrefectClient) -> None:
    """The pool exists with :func:`pool_template`. A pool an earlier `up` made is brought
    in line (Prefect's stock template, or another interpreter's command); one an operator
    changed is theirs, and left as it is."""
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    template = pool_template()
    try:
        pool = client.read_work_pool(POOL)
    except ObjectNotFound:
        client.create_work_pool(
            WorkPoolCreate(name=POOL, type="process", base_job_template=template)
        )
        return
    if pool.base_job_template != template and _paddocks_own(pool.base_job_template):
        client.update_work_pool(POOL, WorkPoolUpdate(base_job_template=template))


def deploy(env: dict[str, str], logs: Path, client: SyncPrefectClient) -> tuple[list[str], str]:
    """`prefect deploy --all` over prefect.yaml: every deployment, ours and others'.

    Returns the deployments now registered and a warning when some could not be: the
    submission deployment is the one `up` cannot do without.
    """
    from prefect.exceptions import ObjectNotFound

    log = logs / "deploy.log"
    with log.open("ab") as out:
        done = subprocess.run(
            [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=REPO,
            timeout=600,
        )
    names = _deployments(client)
    try:
        client.read_deployment_by_name(DEPLOYMENT)
    except ObjectNotFound:
        raise StackError(
            f"`prefect deploy --all` did not register {DEPLOYMENT}; see {log}"
        ) from None
    warning = ""
    if done.returncode != 0:
        warning = f"`prefect deploy --all` failed part-way (see {log}): {tail(str(log), 2)}"
    return names, warning


def _deployments(client: SyncPrefectClient) -> list[str]:
    """`flow/deployment` for every deployment the server has."""
    flows: dict[UUID, str] = {}
    names = []
    for deployment in client.read_deployments():
        if deployment.flow_id not in flows:
            flows[deployment.flow_id] = client.read_flow(deployment.flow_id).name
        names.append(f"{flows[deployment.flow_id]}/{deployment.name}")
    return sorted(names)


def wait_worker(client: SyncPrefectClient, part: Part, since: float, timeout: float) -> None:
    """Until the worker has said hello to the server after `since` (a Unix time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not part.alive():
            raise StackError(
                f"the worker exited while starting; its log {part.log} ends: {tail(part.log)}"
            )
        for worker in client.read_workers_for_work_pool(POOL):
            beat = worker.last_heartbeat_time
            if worker.name == WORKER and beat is not None and beat.timestamp() >= since - 1:
                return
        time.sleep(0.5)
    raise StackError(f"the worker did not reach the server within {timeout:.0f} s; see {part.log}")
