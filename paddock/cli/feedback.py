"""Feedback commands: a model's ratings, the leaderboard, where the router sends users.

The bodies come from `paddock.feedback_views` on the database, or from the API routes that
return those same views, so `--json` is the API's JSON either way.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import quote

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from paddock.cli import api_mode, app, fail, out, print_json
from paddock.errors import TransientError

Json = Annotated[bool, typer.Option("--json", help="print the API's JSON")]


def _api_get(path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    from paddock.client import from_settings

    with from_settings() as client:
        body = client.get(path, params=params)
    if not isinstance(body, dict):
        raise TransientError(f"the API answered {path} with {body!r}, not a JSON object")
    return body


@app.command()
def feedback(
    submission_id: Annotated[str, typer.Argument(help="the submission's id")],
    limit: Annotated[int, typer.Option(min=1, max=1000, help="newest ratings to show")] = 100,
    developer: Annotated[
        str | None, typer.Option(help="only if it is this developer's (database only)")
    ] = None,
    as_json: Json = False,
) -> None:
    """A model's ratings from users: thumbs, texts, arena votes and regenerations."""
    if api_mode():
        if developer is not None:
            fail("--developer works on the database only; the API acts as the key's developer")
        body = _api_get(f"/submissions/{quote(submission_id, safe='')}/feedback", {"limit": limit})
    else:
        from paddock import feedback_views

        view = feedback_views.submission_feedback(
            submission_id=submission_id, developer=developer, limit=limit
        )
        body = view.model_dump(mode="json")
    if as_json:
        print_json(body)
        return
    retries = body["retries"]
    out.print(
        f"[bold]{escape(body['name'])}[/] ({body['submission_id']}): {body['ratings']} ratings — "
        f"{body['thumbs_up']} up, {body['thumbs_down']} down; {body['arena_votes']} arena "
        f"votes; {retries} regeneration{'s' if retries != 1 else ''}",
        highlight=False,
    )
    if not body["items"]:
        return
    table = Table("when (UTC)", "", "category", "text", "conversation")
    for item in body["items"]:
        table.add_row(
            str(item["created_at"])[:19].replace("T", " "),
            "👍" if item["thumbs_up"] else "👎",
            item["category"] or "",
            Text(item["text"] or ""),  # users' words, never read as markup ("[email]")
            item["conversation_id"],
        )
    out.print(table)


@app.command()
def leaderboard(as_json: Json = False) -> None:
    """The latest leaderboard the feedback flow computed (empty until it has run)."""
    if api_mode():
        body = _api_get("/leaderboard")
    else:
        from paddock import feedback_views

        body = feedback_views.leaderboard().model_dump(mode="json")
    if as_json:
        print_json(body)
        return
    if body["created_at"] is None:
        out.print("no leaderboard yet: the feedback flow has not run")
        return
    out.print(f"leaderboard of {str(body['created_at'])[:19].replace('T', ' ')} UTC")
    for title, rows in (("models", body["rows"]), ("arena", body["arena"])):
        if rows:
            out.print(_table(title, rows))


def _table(title: str, rows: list[dict[str, Any]]) -> Table:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    return table


def _cell(value: Any) -> Text:
    if value is None:
        return Text("")
    if isinstance(value, float):
        return Text(f"{value:.3g}")
    return Text(str(value))  # names come from submitters: plain text, not markup


@app.command()
def route(
    arena: Annotated[bool, typer.Option("--arena", help="the pair an arena would get")] = False,
    explain: Annotated[bool, typer.Option("--explain", help="every candidate, and why")] = False,
    as_json: Json = False,
) -> None:
    """Where the router would send the next user (nothing is started)."""
    mode: Literal["beta", "arena"] = "arena" if arena else "beta"
    if api_mode():
        body = _api_get("/route", {"mode": mode})
    else:
        from paddock.router import choose_sync

        body = choose_sync(mode=mode).model_dump(mode="json")
    if as_json:
        print_json(body)
        return
    names = {c["submission_id"]: c["name"] for c in body["candidates"]}
    chosen = ", ".join(f"{names.get(sid, sid)} ({sid})" for sid in body["chosen"])
    out.print(f"{mode}: {chosen}", highlight=False)
    if not explain:
        return
    table = Table("", "model", "id", "ratings", "needed", "age", "health")
    for c in body["candidates"]:
        table.add_row(
            "→" if c["submission_id"] in body["chosen"] else "",
            Text(c["name"]),
            c["submission_id"],
            str(c["ratings"]),
            str(c["needed"]),
            _age(c["age_s"]),
            c["health"],
        )
    out.print(table)
    out.print(f"target: {body['target_feedback']} ratings per model. {body['reason']}")


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"
