"""The README's table of hostile inputs, generated from the hardening tests' own records.

    .venv/bin/pytest tests/hardening --hardening-report /tmp/hardening.json
    .venv/bin/python bench/hardening_table.py /tmp/hardening.json [--out table.md]

Each row is a case whose test passed: what was submitted and from where, the stage that
refused it (``submit`` is the submission request itself, before any flow runs) and the
sentence the developer was given. Generating it keeps the README from promising a
refusal the code no longer makes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

STAGES = ["submit", "download", "sanity", "serialize", "upload", "deploy"]
_TEMP = re.compile(r"(/tmp|/var/folders)/[^\s'\"]*?/(?=[^/\s'\"]+['\"\s)])")
_LOCAL_URL = re.compile(r"https?://(127\.0\.0\.1|localhost):\d+")


def _cell(text: str) -> str:
    """Markdown-safe, and free of this run's temporary paths and ports."""
    text = _LOCAL_URL.sub("the hub", _TEMP.sub(".../", text))
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _kind(kind: str) -> str:
    return f"`{kind}`" if re.fullmatch(r"[a-z0-9_]+", kind) else _cell(kind)


def table(records: list[dict[str, Any]]) -> str:
    """One markdown row per record, in pipeline order (stable within a stage)."""

    def order(item: tuple[int, dict[str, Any]]) -> tuple[int, int]:
        index, record = item
        stage = record["stage"]
        return (STAGES.index(stage) if stage in STAGES else len(STAGES), index)

    rows = [
        "| hostile input | from | stage | outcome | what the developer is told |",
        "|---|---|---|---|---|",
    ]
    for _, r in sorted(enumerate(records), key=order):
        rows.append(
            f"| {_kind(r['kind'])} | {r['source']} | {r['stage']} | {r['outcome']} "
            f"| {_cell(r['reason'])} |"
        )
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("report", type=Path, help="JSON written by --hardening-report")
    parser.add_argument("--out", type=Path, help="write the table here instead of stdout")
    args = parser.parse_args(argv)
    records = json.loads(args.report.read_text())
    text = table(records)
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
