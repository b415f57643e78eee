"""`paddock costs`: what serving and storing models cost, for operators.

Costs span every developer and read the prices from the blocks, so the command works on
the database, not through the API (which acts as one developer).
"""

from __future__ import annotations

from typing import Annotated, Literal

import typer
from rich.table import Table

from paddock.cli import api_mode, app, fail, out, print_json

# `paddock.costs.By`, spelled here so that building the CLI imports no database layer
# (typer reads the choices from the signature); a test keeps the two equal.
By = Literal["submission", "developer", "month"]


def _usd(value: float | None) -> str:
    return "" if value is None else f"${value:,.2f}"


@app.command(name="costs")
def show_costs(
    by: Annotated[
        By, typer.Option("--by", help="group by submission, developer or month")
    ] = "submission",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Serving and storage costs, and the cost per 1,000 chat messages."""
    if api_mode():
        fail("costs are an operator's view of the database; unset PADDOCK_API_URL to see them")
    from paddock import costs

    report = costs.report(costs.read_usage(), costs.current_prices(), by=by)
    if as_json:
        print_json(report.as_dict())
        return
    prices = report.prices
    table = Table(
        by,
        "serving h",
        "serving",
        "GB-months",
        "storage",
        "total",
        "messages",
        "per 1k msgs",
        title=f"costs at ${prices.serving_usd_per_hour:g}/h serving, "
        f"${prices.storage_usd_per_gb_month:g}/GB-month storage",
    )
    for row in [*report.rows, report.total]:
        table.add_row(
            f"{row.key} ({row.name})" if row.name else row.key,
            f"{row.serving_hours:,.1f}",
            _usd(row.serving_usd),
            f"{row.gb_months:,.3f}",
            _usd(row.storage_usd),
            _usd(row.total_usd),
            str(row.messages),
            _usd(row.usd_per_1k_messages),
            end_section=row is report.rows[-1] if report.rows else False,
        )
    out.print(table)
