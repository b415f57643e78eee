"""`python -m paddock.cli …`, as the tests and the demo run it."""

from paddock.cli import app

app(prog_name="paddock")
