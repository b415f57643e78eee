"""Undoing a failed run: stop what it deployed and take back what it uploaded.

The flow calls this once a failure is final — after the failing stage has used up its
retries — never on a first failed attempt, so a retried stage keeps the deployment the
next attempt needs. The submission releases its bundle; the bundle leaves the store only
if no other submission holds it (bundles are content-addressed, and an identical
submission may be serving the same one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prefect import task

from blocks import model_store
from paddock import bundles, crud
from paddock.errors import LeaseLost
from paddock.serving import stop_serving

__all__ = ["roll_back", "undone_on_failure"]


@task(name="roll-back")
def roll_back(submission_id: str) -> None:
    stop_serving(submission_id)
    if crud.list_artifacts(submission_id=submission_id):
        bundles.release(submission_id, store=model_store().open())


@contextmanager
def undone_on_failure(
    submission_id: str, *, once_ended: Callable[[], object] | None = None
) -> Iterator[None]:
    """Roll the submission back if the block raises; the failure still propagates. Not
    when the run lost its lease: what it would undo is the new holder's.

    ``once_ended`` waits for the work still under way beside the block (an upload beside
    the deploy): it is called before the rollback, which would otherwise take back an
    upload that then goes on writing.
    """
    try:
        yield
    except LeaseLost:
        raise  # the run that took the lease owns the server and the upload now
    except BaseException:
        if once_ended is not None:
            once_ended()
        roll_back(submission_id)
        raise
