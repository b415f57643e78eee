"""Starting a flow run in a child process on this machine, logging under PADDOCK_HOME/logs.

The child uses this paddock home and its Prefect (an ephemeral one unless PREFECT_API_URL
names a server). The domain never imports flows/: it names the module to run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from paddock.config import get_settings

__all__ = ["spawn_flow", "spawn_module", "flow_log_path", "log_path"]


def log_path(log_name: str) -> Path:
    return get_settings().log_dir / log_name


def flow_log_path(submission_id: str) -> Path:
    return log_path(f"{submission_id}.flow.log")


def spawn_flow(submission_id: str, *, detach: bool) -> subprocess.Popen[bytes]:
    return spawn_module(
        "flows.submission",
        submission_id,
        log_name=flow_log_path(submission_id).name,
        detach=detach,
    )


def spawn_module(
    module: str, *args: str, log_name: str, detach: bool = False
) -> subprocess.Popen[bytes]:
    """Run `python -m module args…` with this paddock home, logging to the log dir."""
    settings = get_settings()
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    log = log_path(log_name).open("ab")
    env = {**os.environ, "PADDOCK_HOME": str(settings.home)}
    env.setdefault("PREFECT_HOME", str(settings.home / "prefect"))
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # A fresh ephemeral Prefect sets up its database first: on a busy small machine that
    # takes longer than Prefect's default 20 s wait, and the run would die before its first
    # stage.
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=detach,
        cwd=Path(__file__).resolve().parents[1],
    )
