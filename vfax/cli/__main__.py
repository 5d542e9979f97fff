"""`python -m vfax.cli`: the same command line as the installed `vfax` script."""

from vfax.cli import app

app()
