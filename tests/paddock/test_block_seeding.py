"""The configuration blocks are seeded once however many runs start at the same moment on a
fresh Prefect server: every run gets the block, none fails for having lost the race."""

from __future__ import annotations

import threading
import uuid

import pytest

from blocks.defaults import model_source, model_store


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("load", [model_source, model_store], ids=["source", "store"])
def test_runs_starting_at_once_all_get_the_one_block(load: object) -> None:
    name = f"race-{uuid.uuid4().hex[:8]}"  # never seen by this server
    racers = 8
    barrier = threading.Barrier(racers)
    got: list[object] = []
    errors: list[BaseException] = []

    def racer() -> None:
        barrier.wait()
        try:
            got.append(load(name))  # type: ignore[operator]
        except BaseException as exc:  # collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=racer) for _ in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert len(got) == racers
    assert len({type(b).load(name)._block_document_id for b in got}) == 1  # type: ignore[attr-defined]
