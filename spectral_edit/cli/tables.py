"""Tables on the terminal (rich): rows of cells, and an object's fields as key/value rows."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.table import Table

from ..util.report import fmt
from .common import console


def print_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A table with a header row; cells through :func:`~spectral_edit.util.report.fmt`."""
    table = Table(title=title)
    for header in headers:
        table.add_column(header)
    for row in rows:
        table.add_row(*(fmt(c) for c in row))
    console.print(table)


def print_fields(title: str, rows: Iterable[tuple[str, Any]]) -> None:
    """A headerless two-column table of ``(name, str(value))`` rows."""
    table = Table(title=title, show_header=False)
    for key, value in rows:
        table.add_row(key, str(value))
    console.print(table)
