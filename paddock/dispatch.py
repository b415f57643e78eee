"""Starting a submission's flow run: the one place that decides how runs are started.

Today a run is a detached child process on this machine; a Prefect work pool (through
`run_deployment`) can replace it here without the CLI or the API noticing. Runs are always
detached, so neither a closed terminal nor a restarted API server stops one.
"""

from __future__ import annotations

import subprocess
import threading

from paddock.runner import spawn_flow, spawn_module

__all__ = ["Run", "start_run", "run_stress"]


class Run:
    """A started flow run, for a caller that wants to follow it."""

    def __init__(self, submission_id: str, proc: subprocess.Popen[bytes]) -> None:
        self.submission_id = submission_id
        self._proc = proc
        # Reap the child when it ends, so a long-lived API server collects no zombies.
        threading.Thread(target=proc.wait, name=f"reap-{submission_id}", daemon=True).start()

    def alive(self) -> bool:
        return self._proc.poll() is None

    def wait(self) -> int:
        return self._proc.wait()


def start_run(submission_id: str) -> Run:
    """Start (or resume) the submission's flow; stages an earlier run finished are skipped."""
    return Run(submission_id, spawn_flow(submission_id, detach=True))


def run_stress(
    *, submission_id: str, endpoint: str, model: str, profile: str, log_name: str
) -> int:
    """Stress-test a live model again in a `stress` flow run; returns its exit code."""
    return spawn_module(
        "flows.stress", endpoint, model, profile, submission_id, log_name=log_name
    ).wait()
