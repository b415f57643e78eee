"""What a model server process may see of ours: an allowlisted environment, and S3 keys
only as a private ~/.s3cfg.

The process that starts a server (a flow run) holds the hub token, the store's keys and
paddock's own secrets, none of which a model server needs; a process's environment is
readable in /proc/<pid>/environ and copied into crash reports, and its arguments are
visible to every user of the machine.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from deployments.base import ServeSpec

__all__ = ["child_env", "private_home", "omp_threads"]

# Environment keys that carry S3 credentials; they go into a private ~/.s3cfg, never argv.
_ACCESS_KEYS = ("S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID")
_SECRET_KEYS = ("S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")
# What a vLLM server inherits from the process that starts it; nothing else crosses over.
# That process (a flow run) holds the hub token, the store's keys and paddock's own
# secrets, none of which a model server needs, and a process's environment is readable in
# /proc/<pid>/environ and copied into crash reports. S3 keys reach it only as ~/.s3cfg.
_CHILD_ENV = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR",
        "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONHASHSEED",
        "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
        "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "LD_LIBRARY_PATH", "LD_PRELOAD",
        "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
        "AWS_CA_BUNDLE", "NVIDIA_VISIBLE_DEVICES",
    }
)  # fmt: skip
_CHILD_ENV_PREFIXES = ("VLLM_", "OMP_", "KMP_", "MKL_", "LC_", "CUDA_", "NCCL_", "TORCH_")


def child_env(spec: ServeSpec | None = None) -> dict[str, str]:
    """The server's environment: the allowlisted part of ours, then the spec's own (no
    spec: what every server gets, as a spare interpreter is started with).

    S3 keys stay only when the tensors stream from S3, and only until `private_home`
    moves them into ~/.s3cfg; ours are candidates there when the spec brings none.
    """
    env = {
        k: v for k, v in os.environ.items() if k in _CHILD_ENV or k.startswith(_CHILD_ENV_PREFIXES)
    }
    env.update(spec.env if spec else {})
    for key in (*_ACCESS_KEYS, *_SECRET_KEYS):
        if spec is None or not spec.bundle_uri.startswith("s3://"):
            env.pop(key, None)
        elif key not in env and os.environ.get(key):
            env[key] = os.environ[key]
    return env


def omp_threads() -> int:
    """What vLLM's CPU worker process would get: the usable cores but one (for the engine
    and API server), at least one."""
    return max(1, len(os.sched_getaffinity(0)) - 1)


def private_home(env: dict[str, str], access_key: str | None, secret_key: str | None) -> Path:
    """A private HOME with ~/.s3cfg, where tensorizer looks for S3 credentials; the keys
    given win over the environment's, and leave the environment either way."""
    access = access_key or next((env[k] for k in _ACCESS_KEYS if env.get(k)), None)
    secret = secret_key or next((env[k] for k in _SECRET_KEYS if env.get(k)), None)
    real_home = Path(env.get("HOME") or Path.home())
    # Keep caches and config where they were; only HOME moves.
    env.setdefault("XDG_CACHE_HOME", str(real_home / ".cache"))
    env.setdefault("XDG_CONFIG_HOME", str(real_home / ".config"))
    home = Path(tempfile.mkdtemp(prefix="paddock-vllm-home-"))  # mode 0700
    env["HOME"] = str(home)
    if access and secret:
        cfg = home / ".s3cfg"
        fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"[default]\naccess_key = {access}\nsecret_key = {secret}\n")
    for k in (*_ACCESS_KEYS, *_SECRET_KEYS):
        env.pop(k, None)  # the file is the one place the process gets them from
    return home
