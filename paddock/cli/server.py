"""`paddock serve`: the HTTP API, for developers' CLIs and the chat front end."""

from __future__ import annotations

from typing import Annotated

import typer

from paddock.cli import app


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8321,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level")] = "info",
) -> None:
    """Serve the paddock API (OpenAPI document at /docs and /openapi.json)."""
    import uvicorn

    from paddock.config import get_settings

    # Read now, not in the app's lifespan: a bad setting is then one sentence from the
    # CLI, not uvicorn's "Application startup failed" after a traceback.
    get_settings()

    uvicorn.run(
        "paddock.api.app:create_app", factory=True, host=host, port=port, log_level=log_level
    )
