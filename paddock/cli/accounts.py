"""Account commands: `developer create` (an operator's), `login`, `logout`, `whoami`, `keys`.

A key is read from a prompt or stdin, never from the command line, where other users'
`ps` and the shell's history would see it.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from paddock.cli import api_mode, app, err, fail, out, print_json
from paddock.cli.backend import open_backend

developer_app = typer.Typer(
    no_args_is_help=True, help="Developer accounts (an operator's commands, on the database)."
)
keys_app = typer.Typer(no_args_is_help=True, help="Your API keys (shown once, when issued).")
app.add_typer(developer_app, name="developer")
app.add_typer(keys_app, name="keys")

Json = Annotated[bool, typer.Option("--json", help="print the API's JSON")]
DeveloperOpt = Annotated[
    str | None, typer.Option(help="whose keys (database only; through the API: yours)")
]


@developer_app.command("create")
def create_developer(name: str, as_json: Json = False) -> None:
    """Add a developer and print their first API key, once."""
    from paddock import accounts
    from paddock.api.schemas import DeveloperCreated

    developer = accounts.create_developer(name=name)
    key = accounts.issue_key(developer_id=developer.id)
    created = DeveloperCreated(
        id=developer.id,
        name=developer.name,
        created_at=developer.created_at,
        prefix=key[: accounts.PREFIX_LENGTH],
        key=key,
    )
    if as_json:
        print_json(created.model_dump(mode="json"))
        return
    err.print(f"developer {developer.name} ({developer.id}); their API key, shown this once:")
    out.print(key, highlight=False)


@app.command()
def login() -> None:
    """Store an API key for PADDOCK_API_URL (asked for, or read from stdin)."""
    from paddock.client import ApiClient, save_credentials
    from paddock.config import get_settings

    url = get_settings().api_url
    if not url:
        fail("set PADDOCK_API_URL to the paddock API to log in to")
    if sys.stdin.isatty():
        key = typer.prompt("API key", hide_input=True)
    else:
        key = sys.stdin.readline()
    key = key.strip()
    if not key:
        fail("no API key given (type it at the prompt, or pipe it on stdin)")
    with ApiClient(url, key) as client:
        me = client.me()
    path = save_credentials(api_url=url, key=key, developer=me["name"])
    out.print(f"logged in to {url} as {me['name']} (key stored in {path})", highlight=False)


@app.command()
def logout() -> None:
    """Forget the stored API key."""
    from paddock.client import forget_credentials

    stored = forget_credentials()
    if stored is None:
        out.print("not logged in")
    else:
        out.print(f"logged out of {stored.get('api_url')}", highlight=False)


@app.command()
def whoami(as_json: Json = False) -> None:
    """Show the developer the API key belongs to."""
    if not api_mode():
        fail("`paddock whoami` asks the API; set PADDOCK_API_URL")
    with open_backend() as backend:
        me = backend.me()
    if as_json:
        print_json(me)
    else:
        out.print(f"{me['name']} ({me['id']})", highlight=False)


@keys_app.command("list")
def list_keys(developer: DeveloperOpt = None, as_json: Json = False) -> None:
    """List API keys by prefix, oldest first."""
    with open_backend(developer=developer) as backend:
        keys = backend.list_keys()
    if as_json:
        print_json(keys)
        return
    table = Table("prefix", "created", "revoked")
    for k in keys:
        revoked = str(k["revoked_at"] or "")[:19].replace("T", " ")
        table.add_row(k["prefix"], str(k["created_at"])[:19].replace("T", " "), revoked)
    out.print(table)


@keys_app.command("create")
def create_key(developer: DeveloperOpt = None, as_json: Json = False) -> None:
    """Issue a new API key and print it, once."""
    with open_backend(developer=developer) as backend:
        created = backend.create_key()
    if as_json:
        print_json(created)
        return
    err.print(f"new key {created['prefix']}…, shown this once:")
    out.print(created["key"], highlight=False)


@keys_app.command("revoke")
def revoke_key(prefix: str, developer: DeveloperOpt = None) -> None:
    """Revoke an API key by its prefix (as `paddock keys list` shows it)."""
    with open_backend(developer=developer) as backend:
        backend.revoke_key(prefix)
    out.print(f"revoked {prefix}", highlight=False)
