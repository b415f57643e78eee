"""The machine's spare keeper: one spare to the first claim, the next only when it is
time, nothing left behind, and a server started from its spare that paddock can stop."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deployments import spares
from deployments.base import ServeSpec
from deployments.local import LocalBackend
from deployments.spare_keeper import Keeper, Recipe
from paddock.bundle import write_bundle
from tests.utils.vllm import chat, needs_vllm, pid_alive

pytestmark = needs_vllm

StartKeeper = Callable[..., Keeper]


def _reaped(pid: int) -> bool:
    """Gone from the process table: not even a zombie waiting for its parent."""
    return not Path(f"/proc/{pid}").exists()


def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    return LocalBackend(log_dir=tmp_path / "logs")


@pytest.fixture
def start_keeper(backend: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> Iterator[StartKeeper]:
    """Start a keeper (on a thread, as its process would run it) for `backend`'s servers;
    every one is stopped, and every spare a test left is discarded, at the end."""
    where = Path(tempfile.mkdtemp(prefix="pk-"))  # a Unix socket's path is short
    monkeypatch.setenv(spares.SOCKET_VAR, str(where / "spares.sock"))
    running: list[tuple[Keeper, threading.Thread]] = []

    def start(env: dict[str, str] | None = None, **timing: float) -> Keeper:
        recipe = Recipe(backend.python, env or backend.spare_env(), backend.log_dir)
        keeper = Keeper(where / "spares.sock", lambda: recipe, **timing)
        thread = threading.Thread(target=keeper.serve, daemon=True)
        thread.start()
        running.append((keeper, thread))
        _until(lambda: keeper.spare is not None, 10, "the keeper started no spare")
        return keeper

    yield start
    for key in list(spares._spares):
        spares.discard(key)
    for keeper, thread in running:
        keeper.stop()
        thread.join(timeout=10)
    shutil.rmtree(where, ignore_errors=True)


def test_no_keeper_means_no_claim(backend: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(spares.SOCKET_VAR, raising=False)
    assert not spares.claim("sub-none", backend.python, backend.spare_env())
    monkeypatch.setenv(spares.SOCKET_VAR, "/nonexistent/spares.sock")
    assert not spares.claim("sub-none", backend.python, backend.spare_env())


def test_a_run_deploys_from_the_keepers_spare_and_stops_it_like_any_server(
    backend: LocalBackend, start_keeper: StartKeeper, tiny_model: Path, tmp_path: Path
) -> None:
    keeper = start_keeper(quiet_s=3600, max_wait_s=3600)
    assert keeper.spare is not None
    kept = keeper.spare.pid
    backend.prestart("sub-kept")  # claims the keeper's spare instead of starting one
    held = spares._spares["sub-kept"]
    assert held.pid == kept and held.proc is None, "the run started a spare of its own"
    # Given away (the keeper lets go of it just after the answer), the next not yet due.
    _until(lambda: keeper.spare is None, 5, "the keeper still holds the spare it gave")

    bundle = write_bundle(tiny_model, tmp_path / "bundle").path
    handle = backend.start(ServeSpec("sub-kept", "kept", str(bundle), max_model_len=512))
    assert handle["pid"] == kept and "sub-kept" not in spares._spares
    try:
        endpoint = backend.wait_ready(handle, timeout=240)
        answer = chat(endpoint, "kept", "Hello")
        assert answer.status_code == 200, answer.text
        assert backend.status(handle) == "ready"
    finally:
        backend.stop(handle)
    assert backend.status(handle) == "stopped"
    _until(lambda: _reaped(kept), 5, "the keeper left its stopped server a zombie")


def test_one_spare_goes_to_one_claim_and_the_next_waits_its_turn(
    backend: LocalBackend, start_keeper: StartKeeper
) -> None:
    keeper = start_keeper(quiet_s=3600, max_wait_s=3600)
    assert keeper.spare is not None
    first = keeper.spare.pid
    assert spares.claim("sub-1", backend.python, backend.spare_env())
    # The machine has not been quiet for an hour: no second spare, and a run that asks
    # starts its own.
    assert not spares.claim("sub-2", backend.python, backend.spare_env())
    assert keeper.spare is None
    spares.discard("sub-1")  # the run ended before its deploy
    _until(lambda: _reaped(first), 5, "a discarded spare outlived its run")


def test_the_next_spare_comes_once_its_wait_is_over(
    backend: LocalBackend, start_keeper: StartKeeper
) -> None:
    keeper = start_keeper(quiet_s=3600, max_wait_s=0)
    assert spares.claim("sub-1", backend.python, backend.spare_env())
    _until(lambda: keeper.spare is not None, 5, "no next spare after the wait")
    assert spares.claim("sub-2", backend.python, backend.spare_env())
    assert spares._spares["sub-1"].pid != spares._spares["sub-2"].pid


def test_a_run_that_ends_without_an_order_leaves_its_spare_to_exit(
    backend: LocalBackend, start_keeper: StartKeeper
) -> None:
    start_keeper(quiet_s=3600, max_wait_s=3600)
    assert spares.claim("sub-gone", backend.python, backend.spare_env())
    spare = spares._spares.pop("sub-gone")
    spare.stdin.close()  # what a run's death does: the only writer's end closes
    # The spare finishes its imports, reads end of input and exits; the keeper reaps it.
    _until(lambda: _reaped(spare.pid), 120, "an abandoned spare kept running")


def test_a_spare_started_differently_is_let_go_at_once(
    backend: LocalBackend, start_keeper: StartKeeper
) -> None:
    env = {**backend.spare_env(), "OMP_NUM_THREADS": "7"}  # read while importing
    keeper = start_keeper(env, quiet_s=3600, max_wait_s=3600)
    assert keeper.spare is not None
    pid = keeper.spare.pid
    assert not spares.claim("sub-differs", backend.python, backend.spare_env())
    assert "sub-differs" not in spares._spares
    _until(lambda: _reaped(pid), 5, "the mismatched spare was left running")


def test_a_stopped_keeper_kills_the_spare_it_holds_and_takes_its_socket_away(
    backend: LocalBackend, start_keeper: StartKeeper
) -> None:
    keeper = start_keeper()
    assert keeper.spare is not None
    pid = keeper.spare.pid
    assert pid_alive(pid)
    keeper.stop()
    _until(lambda: _reaped(pid), 10, "the keeper's spare outlived it")
    _until(lambda: not keeper.path.exists(), 5, "the socket outlived the keeper")
    assert not spares.claim("sub-late", backend.python, backend.spare_env())


def test_nothing_to_hold_or_a_spare_that_dies_at_once_is_not_retried_every_tick(
    tmp_path: Path,
) -> None:
    asked: list[str] = []

    def not_local() -> Recipe | None:
        asked.append("not local")
        return None

    def broken() -> Recipe | None:  # an interpreter that exits at once
        asked.append("broken")
        return Recipe(Path("/bin/false"), {}, tmp_path)

    for recipe in (not_local, broken):
        keeper = Keeper(tmp_path / f"{recipe.__name__}.sock", recipe, max_wait_s=1000)
        keeper.cpu.quiet = lambda: True  # type: ignore[method-assign]  # quiet throughout
        thread = threading.Thread(target=keeper.serve, daemon=True)
        thread.start()
        time.sleep(2.0)  # four ticks
        keeper.stop()
        thread.join(timeout=10)
        assert asked.count(recipe.__name__.replace("_", " ")) == 1, asked
