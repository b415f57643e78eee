"""A stage run beside the main line of the pipeline: started, watched, joined.

The runtime checks need nothing serialize, upload and deploy make, and those need nothing
from the checks until warm-up, so the flow runs them at once (a Prefect task submitted to
the flow's thread pool: its own task run in the UI, its own timeline row). Two rules keep
that as safe as running them in turn:

  * Checks that fail stop the main line. The watcher moves the submission to `failed` —
    a deploy in progress sees that and stops its server, as it does when a developer
    stops a model — and stops any server already recorded. The flow then finds the
    failure before its next stage and rolls the run back. (A stage that starts in the
    instant between is not refused — `failed` may resume — so the flow joins the checks
    again before warm-up, and the rollback stops whatever that stage started.)
  * Whichever side fails first owns the failure. The deploy that stopped because the
    checks failed is not the reason; nor are checks that fail after deploy already did.

Checks that stop because another run took the lease (`LeaseLost`) stop nothing: the
submission, its server and its upload are that run's now.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, ParamSpec, TypeVar

from prefect import Task
from prefect.futures import PrefectFuture

from paddock import crud, lifecycle
from paddock.contracts import Handoff, Snapshot
from paddock.errors import IllegalTransition, LeaseLost
from paddock.models import StageStatus, Status
from paddock.serving import stop_serving

__all__ = ["Alongside"]

H = TypeVar("H", bound=Handoff)
T = TypeVar("T")
P = ParamSpec("P")
log = logging.getLogger(__name__)

_ALONGSIDE, _MAIN = "alongside", "main"


class Alongside(Generic[H]):
    """``stage(submission_id, snapshot)`` running beside the main line."""

    def __init__(
        self, stage: Task[[str, Snapshot], H], submission_id: str, snapshot: Snapshot
    ) -> None:
        self.stage = stage.name
        self._submission_id = submission_id
        self._lock = threading.Lock()
        self._first: str | None = None  # the side whose failure is the reason
        self._ended = threading.Event()
        self._future: PrefectFuture[H] = stage.submit(submission_id, snapshot)
        self._future.add_done_callback(self._finished)

    @property
    def failed_first(self) -> bool:
        return self._first == _ALONGSIDE

    def beside(self, main_stage: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a main-line stage, unless the checks have failed already."""
        with self._main_line():
            if self._ended.is_set():
                self.join()  # raises their failure, if they failed
            return main_stage(*args, **kwargs)

    def join(self) -> H:
        """Wait for the stage; its output, or its failure raised (and made the reason:
        the main line is waiting here, so it has not failed)."""
        try:
            return self._future.result()
        except BaseException:
            with self._lock:
                self._first = self._first or _ALONGSIDE
            raise

    def settle(self) -> BaseException | None:
        """Once the run has failed: wait for the stage (nothing of it may outlive the
        flow); its failure, if it failed (`failed_first` says whether that is the reason)."""
        with self._lock:
            self._first = self._first or _MAIN
        try:
            self._future.result()
        except BaseException as exc:
            return exc
        return None

    @contextmanager
    def _main_line(self) -> Iterator[None]:
        """A failure raised here is the main line's, and the reason, unless the checks
        failed before it (then it is most likely their doing)."""
        try:
            yield
        except BaseException:
            with self._lock:
                self._first = self._first or _MAIN
            raise

    def _finished(self, future: PrefectFuture[H]) -> None:
        """Called in the stage's thread when it ends: a failure stops the main line
        (unless the flow has already seen it: then the flow is rolling back itself)."""
        self._ended.set()
        try:
            future.result()
        except LeaseLost:
            return  # another run took the submission over; the main line stops at its next stage
        except BaseException:
            with self._lock:
                if self._first is not None:
                    return
                self._first = _ALONGSIDE
            try:
                self._stop_main_line()
            except Exception:  # the flow's join still fails the run and rolls it back
                log.exception(
                    "could not stop %s after its %s failed", self._submission_id, self.stage
                )

    def _stop_main_line(self) -> None:
        reason = self._reason()
        for _ in range(5):  # a main-line stage may be moving the status at this moment
            try:
                lifecycle.transition(
                    self._submission_id,
                    Status.failed,
                    reason=reason,
                    failed_stage=self.stage,
                    expect=lifecycle.WORKING,
                )
                break
            except IllegalTransition:
                status = crud.require_submission(submission_id=self._submission_id).status
                if status not in lifecycle.WORKING:
                    break  # stopped by a developer meanwhile: that status stands
        stop_serving(self._submission_id)

    def _reason(self) -> str:
        runs = crud.stage_runs(submission_id=self._submission_id)
        ended = [r for r in runs if r.stage == self.stage]
        last = ended[-1] if ended else None
        if last is not None and last.status in (StageStatus.failed, StageStatus.rejected):
            return str(last.detail.get("error") or f"{self.stage} failed")
        return f"{self.stage} failed"
