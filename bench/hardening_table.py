"""The README's tables of hostile inputs, faults, races and loads, generated from the
hardening tests' own records.

    .venv/bin/pytest tests/hardening --hardening-report /tmp/hardening.json
    .venv/bin/python bench/hardening_table.py /tmp/hardening.json [--out table.md]

Each row is a case whose test passed, in one table per category: what was submitted or
done and from where, the stage it hit (``submit`` is the submission request itself,
before any flow runs), the outcome, and the sentence the developer was given (for a
hostile input) or what happened (for a fault, race or load). Generating it keeps the
README from promising a refusal or a recovery the code no longer makes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

STAGES = [
    "submit", "lease", "download", "sanity", "serialize", "upload", "deploy", "warmup",
    "stress", "publish", "chat",
]  # fmt: skip
# Each category's table: its heading, and what its first and last columns are called.
CATEGORIES = {
    "hostile input": ("Hostile inputs", "hostile input", "what the developer is told"),
    "fault": ("Faults", "fault", "what happened"),
    "race": ("Races", "race", "what happened"),
    "load": ("Loads", "load", "what happened"),
}
_TEMP = re.compile(r"(/tmp|/var/folders)/[^\s'\"]*?/(?=[^/\s'\"]+['\"\s)])")
_LOCAL_URL = re.compile(r"https?://(127\.0\.0\.1|localhost):\d+")


def _cell(text: str) -> str:
    """Markdown-safe, and free of this run's temporary paths and ports."""
    text = _LOCAL_URL.sub("the hub", _TEMP.sub(".../", text))
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _kind(kind: str) -> str:
    return f"`{kind}`" if re.fullmatch(r"[a-z0-9_]+", kind) else _cell(kind)


def table(records: list[dict[str, Any]], *, category: str = "hostile input") -> str:
    """One markdown row per record of ``category``, in pipeline order (stable within a
    stage); records written before categories existed are hostile inputs."""

    def order(item: tuple[int, dict[str, Any]]) -> tuple[int, int]:
        index, record = item
        stage = record["stage"]
        return (STAGES.index(stage) if stage in STAGES else len(STAGES), index)

    _heading, first, last = CATEGORIES[category]
    rows = [f"| {first} | from | stage | outcome | {last} |", "|---|---|---|---|---|"]
    chosen = [r for r in records if r.get("category", "hostile input") == category]
    for _, r in sorted(enumerate(chosen), key=order):
        rows.append(
            f"| {_kind(r['kind'])} | {r['source']} | {r['stage']} | {r['outcome']} "
            f"| {_cell(r['reason'])} |"
        )
    return "\n".join(rows) + "\n"


def tables(records: list[dict[str, Any]]) -> str:
    """A ``###`` heading and a table for each category that has records."""
    parts = []
    for category, (heading, _first, _last) in CATEGORIES.items():
        if any(r.get("category", "hostile input") == category for r in records):
            parts.append(f"### {heading}\n\n{table(records, category=category)}")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("report", type=Path, help="JSON written by --hardening-report")
    parser.add_argument("--out", type=Path, help="write the table here instead of stdout")
    args = parser.parse_args(argv)
    records = json.loads(args.report.read_text())
    text = tables(records)
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
