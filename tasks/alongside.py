"""Stages run beside the main line of the pipeline: started, watched, joined.

Two stages need nothing the main line makes next, and it needs nothing from them for a
while, so the flow runs them at once (each a Prefect task submitted to the flow's thread
pool: its own task run in the UI, its own timeline row):

  * the runtime checks, beside serialize → upload → deploy, joined before warm-up;
  * the upload, beside deploy and warm-up, when the server maps the bundle this run
    serialized rather than streaming it from S3 (a local server): joined before the
    stress gate, so that none of its load is in the gate's figures and nothing is
    published that is not stored.

Two rules keep that as safe as running them in turn:

  * A side stage that fails stops the main line. Its watcher moves the submission to
    `failed` — a deploy in progress sees that and stops its server, as it does when a
    developer stops a model — and stops any server already recorded. The flow then finds
    the failure before its next stage and rolls the run back, once every side stage has
    ended (an upload still writing would otherwise outlive its own rollback). A stage
    that starts in the instant between is not refused — `failed` may resume — so the
    flow joins each side stage before what needs it, and the rollback stops whatever
    that stage started.
  * Whichever fails first owns the failure. The deploy that stopped because a side stage
    failed is not the reason; nor is a side stage that fails after the main line did.

Side stages that stop because another run took the lease (`LeaseLost`) stop nothing: the
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
from paddock.contracts import Handoff
from paddock.errors import IllegalTransition, LeaseLost
from paddock.models import StageStatus, Status
from paddock.serving import stop_serving

__all__ = ["Alongside", "Side"]

H = TypeVar("H", bound=Handoff)
H_co = TypeVar("H_co", bound=Handoff, covariant=True)
In = TypeVar("In")  # a side stage's input
T = TypeVar("T")
P = ParamSpec("P")
log = logging.getLogger(__name__)

_MAIN = "main line"


class Side(Generic[H_co]):
    """One stage under way beside the main line."""

    def __init__(self, owner: Alongside, name: str, future: PrefectFuture[H_co]) -> None:
        self.name = name
        self._owner = owner
        self._future = future
        self.ended = threading.Event()

    def join(self) -> H_co:
        """Wait for the stage; its output, or its failure raised (and made the reason:
        the main line is waiting here, so it has not failed)."""
        try:
            return self._future.result()
        except BaseException:
            self._owner._claim(self.name)
            raise

    def wait(self) -> BaseException | None:
        """Wait for the stage; its failure, if it failed."""
        try:
            self._future.result()
        except BaseException as exc:
            return exc
        return None


class Alongside:
    """The stages one run of ``submission_id`` has under way beside its main line."""

    def __init__(self, submission_id: str) -> None:
        self._submission_id = submission_id
        self._lock = threading.Lock()
        self._first: str | None = None  # the side stage whose failure is the reason, or _MAIN
        self._sides: list[Side[Handoff]] = []

    @property
    def names(self) -> tuple[str, ...]:
        """The stages started beside the main line, in the order they started."""
        return tuple(side.name for side in self._sides)

    @property
    def owner(self) -> str | None:
        """The side stage whose failure is the run's reason (None: the main line's)."""
        first = self._first
        return None if first in (None, _MAIN) else first

    def start(self, stage: Task[[str, In], H], given: In) -> Side[H]:
        """Start ``stage(submission_id, given)`` beside the main line, unless a side stage
        has failed already."""
        with self._main_line():
            self._raise_failed()
        side: Side[H] = Side(self, stage.name, stage.submit(self._submission_id, given))
        self._sides.append(side)
        side._future.add_done_callback(lambda future: self._finished(side, future))
        return side

    def beside(self, main_stage: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a main-line stage, unless a side stage has failed already."""
        with self._main_line():
            self._raise_failed()
            return main_stage(*args, **kwargs)

    def settle(self) -> dict[str, BaseException]:
        """Once the run has failed: wait for every side stage (nothing of them may outlive
        the flow or its rollback); their failures by stage (`owner` says which, if any,
        is the reason)."""
        self._claim(_MAIN)
        failures: dict[str, BaseException] = {}
        for side in self._sides:
            failure = side.wait()
            if failure is not None:
                failures[side.name] = failure
        return failures

    def _raise_failed(self) -> None:
        for side in list(self._sides):
            if side.ended.is_set():
                side.join()  # raises its failure, if it failed

    def _claim(self, name: str) -> None:
        with self._lock:
            self._first = self._first or name

    @contextmanager
    def _main_line(self) -> Iterator[None]:
        """A failure raised here is the main line's, and the reason, unless a side stage
        failed before it (then it is most likely that stage's doing)."""
        try:
            yield
        except BaseException:
            self._claim(_MAIN)
            raise

    def _finished(self, side: Side[H], future: PrefectFuture[H]) -> None:
        """Called in the stage's thread when it ends: a failure stops the main line
        (unless the flow has already seen a failure: then it is rolling back itself)."""
        side.ended.set()
        try:
            future.result()
        except LeaseLost:
            return  # another run took the submission over; the main line stops at its next stage
        except BaseException:
            with self._lock:
                if self._first is not None:
                    return
                self._first = side.name
            try:
                self._stop_main_line(side.name)
            except Exception:  # the flow's join still fails the run and rolls it back
                log.exception(
                    "could not stop %s after its %s failed", self._submission_id, side.name
                )

    def _stop_main_line(self, stage: str) -> None:
        reason = self._reason(stage)
        for _ in range(5):  # a main-line stage may be moving the status at this moment
            try:
                lifecycle.transition(
                    self._submission_id,
                    Status.failed,
                    reason=reason,
                    failed_stage=stage,
                    expect=lifecycle.WORKING,
                )
                break
            except IllegalTransition:
                status = crud.require_submission(submission_id=self._submission_id).status
                if status not in lifecycle.WORKING:
                    break  # stopped by a developer meanwhile: that status stands
        stop_serving(self._submission_id)

    def _reason(self, stage: str) -> str:
        runs = crud.stage_runs(submission_id=self._submission_id)
        ended = [r for r in runs if r.stage == stage]
        last = ended[-1] if ended else None
        if last is not None and last.status in (StageStatus.failed, StageStatus.rejected):
            return str(last.detail.get("error") or f"{stage} failed")
        return f"{stage} failed"
