"""The ``refract`` command line (typer): :mod:`refract.cli.app` holds the app, the exit codes
and the error guard; each command is a module of its own, registered here in ``--help``
order.

Exit codes: 0 ok; 2 usage errors (bad values, missing files, unwritable outputs), a failed
noise floor, a failed selftest; 1 runtime failures; 130 interrupted. Every error is one line
on stderr; set ``REFRACT_DEBUG=1`` for a traceback.
"""

from __future__ import annotations

from refract.cli import (
    cache,
    compare,
    fetch,
    leaderboard,
    matrix,
    repeatability,
    score,
    selftest,
    sweep,
)
from refract.cli.app import app

__all__ = ["app", "main"]

for _command in (score.score, sweep.sweep, repeatability.repeatability, compare.compare,
                 leaderboard.leaderboard, fetch.fetch, cache.cache, selftest.selftest,
                 matrix.matrix):
    app.command()(_command)


def main() -> None:
    """Console-script entry point (``refract``, ``python -m refract``)."""
    app()
