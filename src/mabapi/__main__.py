"""`python -m mabapi` runs the CLI."""

from mabapi.cli import app

app(prog_name="mabapi")
