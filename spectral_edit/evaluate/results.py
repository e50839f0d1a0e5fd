"""An evaluation's results on disk: one folder with the per-record JSON Lines and
``summary.json`` (the layout ``sea eval`` writes)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from ..util.report import write_json, write_jsonl

SUMMARY_FILE = "summary.json"


def write_summary(
    folder: str | os.PathLike[str],
    summary: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``{**summary, **metadata}`` to ``folder/summary.json`` (atomically; the folder
    is created); returns the folder."""
    write_json(Path(folder) / SUMMARY_FILE, {**summary, **(metadata or {})})
    return Path(folder)


class RecordsResult:
    """Base of an evaluator's frozen result dataclass: JSON-ready per-record dicts in the
    field named by :attr:`RECORDS` (input order) and the ``summary`` dict."""

    RECORDS: ClassVar[str]
    """The records' field, also the name of their file: ``<RECORDS>.jsonl``."""
    summary: dict[str, Any]

    def write(
        self, folder: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None
    ) -> Path:
        """Write the records to ``folder/<RECORDS>.jsonl``, then the summary (plus
        ``metadata``, e.g. the model and editor) to ``folder/summary.json``; returns the
        folder."""
        write_jsonl(Path(folder) / f"{self.RECORDS}.jsonl", getattr(self, self.RECORDS))
        return write_summary(folder, self.summary, metadata)
