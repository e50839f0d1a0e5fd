"""A table of a job's result: the CLI prints it on screen, the reports write it as
Markdown; the job itself prints nothing but plain messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from ..util.report import markdown_table


class Table(NamedTuple):
    """``title``, column ``headers`` and ``rows`` of cells (floats are rounded when shown)."""

    title: str
    headers: Sequence[str]
    rows: list[list[Any]]

    def markdown(self) -> str:
        """The table as GitHub-flavoured Markdown (without the title)."""
        return markdown_table(self.headers, self.rows)
