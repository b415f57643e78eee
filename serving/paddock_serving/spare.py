"""A vLLM API server interpreter started before its command line is known.

Most of a local server's start is Python importing torch and vLLM (about 7 s of SmolLM2's
16 s on two cores), and none of it depends on the model. The local backend starts this
module while the bundle is still being serialized and uploaded; it imports the API server
and waits for one line on stdin::

    {"argv": [...], "env": {...}, "cwd": "...", "log": "/…/server.log"}

then becomes that server, exactly as ``python -m vllm.entrypoints.openai.api_server
ARGS`` with that environment would: output to the log, stdin from /dev/null, the module
run as ``__main__``. The environment it was started with already holds everything read
while importing (thread counts, the logging config); the backend hands a spare over only
when those match. End of input before a line (the backend discarded it, or its process
died) ends it quietly.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import warnings

SERVER = "vllm.entrypoints.openai.api_server"


def main() -> None:
    __import__(SERVER)  # the expensive part, done while nobody waits for it
    line = sys.stdin.readline()
    if not line.strip():
        return
    order = json.loads(line)
    log = os.open(order["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    os.environ.clear()
    os.environ.update(order["env"])
    os.chdir(order["cwd"])
    sys.argv = [SERVER, *order["argv"]]
    # runpy notes that the module is imported already (it is, on purpose) and runs it anew.
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="runpy")
    runpy.run_module(SERVER, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
