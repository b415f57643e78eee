"""The stack's worker: Prefect's process worker, woken the moment a run is created.

A Prefect worker finds new flow runs by asking the server every few seconds (every
second here); a submission waited half a poll on average, up to a whole one, before its
run started, and polling faster costs an idle stack CPU on the server. But the runs a
submission needs are created by paddock itself (`paddock.dispatch`), which knows the
instant it has made one. So this worker also listens on a private socket in
``PADDOCK_HOME/stack``: a connection there is a nudge to ask the server now. A nudge
carries nothing and is only ever a hint: the worker asks the server which runs are due,
exactly as its poll would, so a forged or repeated nudge costs one query, and a lost one
costs the poll interval it always did. Runs retried from the Prefect UI or scheduled by
the server are found by the poll as before.

    python -m paddock.stack.worker --pool NAME --name NAME
"""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from paddock.nudge import SOCKET_VAR

if TYPE_CHECKING:
    from prefect.workers.process import ProcessWorker

__all__ = ["main"]


class _Nudges:
    """Connections on the socket, turned into queries for due runs: never two at once,
    and however many nudges arrive while one runs, one more query answers them all. (A
    query racing the poll's is safe: the worker skips a run it is already submitting, and
    the server refuses to start a run twice.)"""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.wanted = anyio.Event()

    async def listen(self) -> None:
        self.listener.setblocking(False)
        while True:
            await anyio.wait_readable(self.listener)
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                continue
            conn.close()  # the connection is the message
            self.wanted.set()

    async def answer(self, worker: ProcessWorker) -> None:
        while True:
            await self.wanted.wait()
            self.wanted = anyio.Event()
            try:
                await worker.get_and_submit_flow_runs()
            except Exception as exc:  # the poll goes on; a failed nudge costs nothing more
                print(f"a nudged query for runs failed: {type(exc).__name__}: {exc}", flush=True)


async def _serve(pool: str, name: str, listener: socket.socket) -> None:
    from prefect.settings import PREFECT_WORKER_HEARTBEAT_SECONDS
    from prefect.workers.process import ProcessWorker

    worker = ProcessWorker(
        name=name,
        work_pool_name=pool,
        heartbeat_interval_seconds=int(PREFECT_WORKER_HEARTBEAT_SECONDS.value()),
    )
    nudges = _Nudges(listener)
    async with anyio.create_task_group() as group:
        group.start_soon(nudges.listen)
        group.start_soon(nudges.answer, worker)
        try:
            await worker.start(printer=lambda *a, **k: print(*a, flush=True))
        finally:
            group.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> None:
    from prefect.utilities.processutils import setup_signal_handlers_worker

    from paddock.errors import PaddockError
    from paddock.sockets import private_listener

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", required=True)
    parser.add_argument("--name", required=True)
    args = parser.parse_args(argv)
    path = os.environ.get(SOCKET_VAR)
    if not path:
        raise SystemExit(f"error: {SOCKET_VAR} is not set; `paddock up` sets it")
    try:
        listener = private_listener(Path(path))
    except PaddockError as exc:
        raise SystemExit(f"error: {exc}") from None
    # As `prefect worker start` does: SIGTERM stops the worker the way Ctrl-C does.
    setup_signal_handlers_worker(os.getpid(), "the process worker", print)
    try:
        anyio.run(_serve, args.pool, args.name, listener)
    except KeyboardInterrupt:
        print(f"Worker {args.name!r} stopped!", flush=True)
    finally:
        listener.close()
        Path(path).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
