"""The `paddock` work pool names its flow-run command, and `up` does not undo an operator.

`test_stack` runs submissions through a worker of this pool end to end; these cases pin
the template itself on a real Prefect server.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator

import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectNotFound
from prefect.workers.process import ProcessWorker

from paddock.stack.layout import POOL
from paddock.stack.registration import ensure_pool, pool_template

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def client() -> Iterator[SyncPrefectClient]:
    with get_client(sync_client=True) as client:
        try:
            client.delete_work_pool(POOL)
        except ObjectNotFound:
            pass
        yield client
        client.delete_work_pool(POOL)


LAUNCH = shlex.join([sys.executable, "-m", "paddock.launch"])


def _command(client: SyncPrefectClient) -> str | None:
    template = client.read_work_pool(POOL).base_job_template
    return template["variables"]["properties"]["command"]["default"]


def test_a_new_pool_starts_runs_through_the_launcher_with_this_interpreter(
    client: SyncPrefectClient,
) -> None:
    ensure_pool(client)
    assert _command(client) == LAUNCH
    assert client.read_work_pool(POOL).base_job_template == pool_template()


def test_a_pool_with_prefects_stock_template_is_brought_in_line(
    client: SyncPrefectClient,
) -> None:
    stock = ProcessWorker.get_default_base_job_template()
    client.create_work_pool(WorkPoolCreate(name=POOL, type="process", base_job_template=stock))
    assert _command(client) is None  # the worker would go through its workspace supervisor
    ensure_pool(client)
    assert _command(client) == LAUNCH


def test_a_pool_an_older_up_made_for_the_engine_now_starts_the_launcher(
    client: SyncPrefectClient,
) -> None:
    older = pool_template(sys.executable, "prefect.engine")
    client.create_work_pool(WorkPoolCreate(name=POOL, type="process", base_job_template=older))
    ensure_pool(client)
    assert _command(client) == LAUNCH


def test_a_pool_an_operator_changed_is_left_as_it_is(client: SyncPrefectClient) -> None:
    theirs = ProcessWorker.get_default_base_job_template()
    theirs["variables"]["properties"]["stream_output"]["default"] = False
    client.create_work_pool(WorkPoolCreate(name=POOL, type="process", base_job_template=theirs))
    ensure_pool(client)
    assert client.read_work_pool(POOL).base_job_template == theirs


def test_a_pool_naming_a_moved_interpreter_gets_this_one(client: SyncPrefectClient) -> None:
    """A venv re-created elsewhere: the old path would fail every run's start."""
    gone = pool_template("/nowhere/.venv/bin/python")
    client.create_work_pool(WorkPoolCreate(name=POOL, type="process", base_job_template=gone))
    ensure_pool(client)
    assert _command(client) == LAUNCH


def test_a_pool_with_another_command_is_the_operators(client: SyncPrefectClient) -> None:
    theirs = pool_template()
    theirs["variables"]["properties"]["command"]["default"] = "nice -n 5 python -m prefect.engine"
    client.create_work_pool(WorkPoolCreate(name=POOL, type="process", base_job_template=theirs))
    ensure_pool(client)
    assert _command(client) == "nice -n 5 python -m prefect.engine"
