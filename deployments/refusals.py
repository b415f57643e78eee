"""Telling a model vLLM refuses from a server that merely failed to start.

Both end the same way (the process exits before it listens), but only one is worth a
retry: a config vLLM rejects (a head count that does not divide the hidden size, an
architecture it does not support) is rejected again on every attempt, and the developer,
not the platform, has to fix it. The reason they need is vLLM's own line, not our
"exited before it was ready".
"""

from __future__ import annotations

import re

__all__ = ["refusal_in"]

# vLLM's logging prefix: "(APIServer pid=1) ERROR 11-24 05:21:49 [repo_utils.py:124] ".
_PREFIX = re.compile(
    r"^(?:\(\w+ pid=\d+\)\s*)?"
    r"(?:(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+"
    r"\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?\s+\[[^\]]*\]\s*)?"
)
_EXCEPTION = re.compile(r"^((?:\w+\.)*(\w+(?:Error|Exception))):\s*(\S.*)$")
_DETERMINISTIC_TYPES = ("ValueError", "NotImplementedError", "ValidationError")
_DETERMINISTIC_WORDS = re.compile(r"not supported|unsupported|\binvalid\b", re.IGNORECASE)
# It listened: whatever failed afterwards is not a refusal of the model.
_LISTENED = ("Uvicorn running on", "Application startup complete")
# Faults of the machine, not the model: these pass, or need an operator, not a developer.
_MACHINE_FAULTS = re.compile(
    r"out of memory|OutOfMemoryError|Cannot allocate memory|No space left|"
    r"Address already in use|Connection refused|timed out|Killed",
    re.IGNORECASE,
)


def refusal_in(log_tail: str) -> str | None:
    """vLLM's own reason if the log shows it refused the model before it ever listened
    (a ValueError, an unsupported or invalid config), else None: then the failure is
    the platform's and may be retried."""
    if any(marker in log_tail for marker in _LISTENED) or _MACHINE_FAULTS.search(log_tail):
        return None
    lines = [_PREFIX.sub("", raw).rstrip() for raw in log_tail.splitlines()]
    for i in reversed(range(len(lines))):
        found = _EXCEPTION.match(lines[i].strip())
        if found is None:
            continue
        kind, message = found.group(2), found.group(3).strip()
        # Pydantic puts the reason on indented lines after "1 validation error for …".
        details = []
        for following in lines[i + 1 : i + 4]:
            if not following[:1].isspace() or _EXCEPTION.match(following.strip()):
                break
            details.append(following.strip().removeprefix("Value error, "))
        said = " ".join([message.rstrip(":"), *details]) if details else message
        if kind.endswith(_DETERMINISTIC_TYPES) or _DETERMINISTIC_WORDS.search(said):
            if said.endswith(":"):
                continue  # a wrapper whose cause is the line below, already passed over
            return f"{kind}: {said}"
    return None
