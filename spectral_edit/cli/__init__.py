"""The ``sea`` command line: one thin module per command group, each calling the Python API.

Needs the ``cli`` extra (typer, rich); :func:`main` says so when it is missing.
"""

from __future__ import annotations

import sys

from ..util.extras import MissingExtraError, require


def main() -> None:  # pragma: no cover - console entry point
    """Entry point of ``sea``."""
    try:
        for module in ("typer", "rich"):
            require(module, "cli", "the sea command")
    except MissingExtraError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    from .app import app

    app()
