"""What a maintenance run did (or would do), as the flow's table and markdown artifacts."""

from __future__ import annotations

from collections.abc import Sequence

from .actions import Outcome

__all__ = ["table_rows", "to_markdown"]


def table_rows(outcomes: Sequence[Outcome]) -> list[dict[str, str]]:
    return [
        {
            "action": str(o.action.kind),
            "target": o.action.target,
            "submissions": ", ".join(o.action.submissions),
            "reason": o.action.reason,
            "result": o.result,
        }
        for o in outcomes
    ]


def to_markdown(flow: str, outcomes: Sequence[Outcome], *, dry_run: bool) -> str:
    title = f"# {flow}{' (dry run: nothing was changed)' if dry_run else ''}"
    if not outcomes:
        return f"{title}\n\nNothing to do.\n"
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[str(o.action.kind)] = counts.get(str(o.action.kind), 0) + 1
    summary = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    lines = [title, "", f"{len(outcomes)} actions: {summary}.", ""]
    verb = "would" if dry_run else "did"
    for o in outcomes:
        users = f" ({', '.join(o.action.submissions)})" if o.action.submissions else ""
        lines.append(
            f"- {verb} **{o.action.kind}** `{o.action.target}`{users}: "
            f"{o.action.reason} — {o.result}"
        )
    return "\n".join(lines) + "\n"
