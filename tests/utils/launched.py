"""What the launcher's tests fork in place of Prefect's engine: it reports what it was
handed (process, streams, environment, directory, arguments, modules) and then ends as
its arguments say — with a code, or by waiting to be stopped."""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path


def main() -> None:
    args = sys.argv[1:]
    report = {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "cwd": os.getcwd(),
        "argv": args,
        "flow_run": os.environ.get("PREFECT__FLOW_RUN_ID"),
        "stdin": sys.stdin.read() if args[:1] == ["exit"] else "",
        "preloaded": "xml.dom.minidom" in sys.modules,
        "frozen": gc.get_freeze_count(),
        "paddock": sorted(m for m in sys.modules if m.split(".")[0] == "paddock"),
    }
    print(json.dumps(report), flush=True)
    if args[0] == "exit":
        raise SystemExit(int(args[1]))
    Path(args[1]).write_text(str(os.getpid()))  # "wait": say who to stop, then wait
    time.sleep(600)


if __name__ == "__main__":
    main()
