"""An evaluation's results on disk: one folder with the per-record JSON Lines and
``summary.json`` (the layout ``sea eval`` writes).

Invariants: both files are written completely to temporaries before either is moved into
place (back to back), so an interrupted write leaves the earlier pair as it was; and no
local path is recorded: string values of ``metadata`` that are local paths (the model
folder, the editor file) are recorded by their shareable name
(:func:`~spectral_edit.util.identity.shareable_name`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any, ClassVar

from ..util.atomic import atomic_path
from ..util.identity import shareable_name

SUMMARY_FILE = "summary.json"


def shareable(value: Any) -> Any:
    """``value`` with every string that is a local path replaced by its shareable name
    (in nested mappings and lists too); anything else unchanged."""
    if isinstance(value, str | os.PathLike):
        return shareable_name(value)
    if isinstance(value, Mapping):
        return {k: shareable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [shareable(v) for v in value]
    return value


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _summary(summary: Mapping[str, Any], metadata: Mapping[str, Any] | None) -> str:
    return _json({**summary, **shareable(dict(metadata or {}))})


def write_summary(
    folder: str | os.PathLike[str],
    summary: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``{**summary, **metadata}`` to ``folder/summary.json`` (atomically; the folder
    is created; local paths in ``metadata`` recorded by name); returns the folder."""
    _write_files(Path(folder), {SUMMARY_FILE: _summary(summary, metadata)})
    return Path(folder)


def _write_files(folder: Path, texts: Mapping[str, str]) -> None:
    """Write every file of ``texts`` (name → content) into ``folder``: all to temporaries
    first, then moved into place in order (see the module docstring)."""
    with ExitStack() as stack:
        # contexts exit last-in first-out: enter in reverse so files commit in order
        temporaries = {
            name: stack.enter_context(atomic_path(folder / name)) for name in reversed(list(texts))
        }
        for name, text in texts.items():
            temporaries[name].write_bytes(text.encode("utf-8"))


class RecordsResult:
    """Base of an evaluator's frozen result dataclass: JSON-ready per-record dicts in the
    field named by :attr:`RECORDS` (input order) and the ``summary`` dict."""

    RECORDS: ClassVar[str]
    """The records' field, also the name of their file: ``<RECORDS>.jsonl``."""
    summary: dict[str, Any]

    def write(
        self, folder: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None
    ) -> Path:
        """Write the records to ``folder/<RECORDS>.jsonl`` and the summary (plus
        ``metadata``, e.g. the model and editor, by name) to ``folder/summary.json``, the
        pair all or nothing (module docstring); returns the folder."""
        records = "".join(
            json.dumps(dict(r), ensure_ascii=False) + "\n" for r in getattr(self, self.RECORDS)
        )
        texts = {f"{self.RECORDS}.jsonl": records, SUMMARY_FILE: _summary(self.summary, metadata)}
        _write_files(Path(folder), texts)
        return Path(folder)
