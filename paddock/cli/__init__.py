"""`paddock`: submit a model, watch it, stop it.

With PADDOCK_API_URL set, commands ask that API as the developer whose key `paddock login`
stored (or PADDOCK_API_KEY); without it they work on the database directly, as an
operator. `--json` prints exactly what the API returns, either way.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console

from paddock.config import get_settings
from paddock.errors import PaddockError

__all__ = ["app", "out", "err", "print_json", "fail", "api_mode"]

out = Console()
err = Console(stderr=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def api_mode() -> bool:
    return get_settings().api_url is not None


class _Paddock(typer.Typer):
    """A paddock error is said in one sentence, never as a traceback, whichever command
    (or front end: database or API) raised it — on one line, however narrow the terminal,
    so a log or a script reading stderr gets it whole."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except PaddockError as exc:
            err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise SystemExit(2) from None


app = _Paddock(
    no_args_is_help=True,
    add_completion=False,
    help="Submit a model, watch it, stop it: through the API at PADDOCK_API_URL when it is "
    "set, on the database otherwise.",
    pretty_exceptions_show_locals=False,  # a traceback must not print an API key
)

# Each module registers its commands on `app`.
import paddock.cli.stack  # noqa: E402,F401  (up, down, sla)
from paddock.cli import accounts, costs, feedback, server, submissions  # noqa: E402,F401
