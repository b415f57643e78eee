"""The HTTP API: `create_app()` in `paddock.api.app`; `paddock serve` runs it.

Nothing is imported here, so the CLI can use the schemas without loading the web stack.
"""
