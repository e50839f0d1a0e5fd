"""Demonstrations: a JSON Lines file of ``(prompt, positive, negative[, neutral])`` records.

One object per line; blank lines are skipped; the three answers are non-empty strings,
``neutral`` (optional) a string; any other field is an error naming the file and line.
The file is read as the benchmark files are (:func:`~spectral_edit.data.readers.iter_json_lines`),
so the two accept and refuse the same: a UTF-8 BOM and CRLF line ends are accepted;
non-UTF-8 bytes, duplicate keys in an object and lone surrogate escapes are refused.
The activations SEA is fitted on are captured from them in
:mod:`spectral_edit.demos.activations`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..data.errors import DataFileMissing, DataFormatError
from ..data.readers import iter_json_lines, require_str
from ..util.atomic import atomic_write_text

FIELDS = ("prompt", "positive", "negative", "neutral")
"""The fields of a line: the first three required, ``neutral`` optional."""


class DemoFormatError(DataFormatError):
    """A demonstrations file is missing, unreadable or malformed.

    A :class:`~spectral_edit.data.errors.DataFormatError` (so a ``ValueError``): the
    message names the file and, for a bad line, the line (``path:line: reason``).
    """


class DuplicateDemonstrationsWarning(UserWarning):
    """Some lines of a demonstrations file repeat an earlier demonstration exactly."""


@dataclass(frozen=True)
class Demonstration:
    """One demonstration; answers are appended to the prompt after a single space."""

    prompt: str
    positive: str
    negative: str
    neutral: str | None = None


def read_demos(path: str | Path) -> list[Demonstration]:
    """Parse a demonstrations file, in file order.

    Invariants: the result is non-empty; every demonstration has a non-blank prompt,
    positive and negative answer. Blank (whitespace-only) lines are skipped; a UTF-8 BOM
    and CRLF line ends are accepted, as by the benchmark readers. Lines that repeat an
    earlier demonstration are kept (each counts in a fit) but warned about, once per file,
    with their count and first line numbers (:class:`DuplicateDemonstrationsWarning`).

    Raises:
        DemoFormatError: the file is absent, a directory or unreadable; it is empty;
            it holds bytes that are not UTF-8 (the line and byte offset are named); or a
            line is not a JSON object of the fields above (invalid JSON, a duplicate key,
            a missing, non-string or blank field, an unknown field). The message names
            the file and line.
    """
    path = Path(path)
    _require_file(path)
    try:
        lines = {line: _parse_record(record, path, line) for line, record in iter_json_lines(path)}
    except DataFileMissing as error:  # unreadable, or gone since the check
        reason = str(error).removeprefix(f"{path}: ")
        raise DemoFormatError(path, reason) from None
    except DataFormatError as error:
        raise DemoFormatError(error.path, error.reason, error.line) from None
    if not lines:
        raise DemoFormatError(path, "no demonstrations in the file (it is empty or blank)")
    _warn_duplicates(path, lines)
    return list(lines.values())


def _require_file(path: Path) -> None:
    """Refuse a path that is not an existing file, saying what it is instead."""
    if path.is_dir():
        raise DemoFormatError(path, "is a directory, not a demonstrations file (JSON Lines)")
    if not path.is_file():
        raise DemoFormatError(
            path, "no such demonstrations file; check the path, or build one with `sea demos`"
        )


def _parse_record(record: dict[str, Any], path: Path, line: int) -> Demonstration:
    """One line's object as a :class:`Demonstration`; a bad field is a
    :class:`DataFormatError` at ``line``."""
    unknown = sorted(set(record) - set(FIELDS))
    if unknown:
        raise DataFormatError(
            path, f"unknown fields {unknown}; a line has only the fields {list(FIELDS)}", line
        )
    prompt, positive, negative = (
        require_str(record, field, path, line, nonempty=True) for field in FIELDS[:3]
    )
    neutral = record.get("neutral")
    if neutral is not None:
        neutral = require_str(record, "neutral", path, line)
    return Demonstration(prompt, positive, negative, neutral)


def _warn_duplicates(path: Path, lines: dict[int, Demonstration]) -> None:
    """Warn once if some lines (``{line number: demonstration}``) repeat an earlier
    demonstration exactly: how many, and the first few line numbers."""
    seen: set[Demonstration] = set()
    repeats: list[int] = []
    for line, demo in lines.items():
        if demo in seen:
            repeats.append(line)
        seen.add(demo)
    if repeats:
        shown = ", ".join(map(str, repeats[:5])) + (", ..." if len(repeats) > 5 else "")
        warnings.warn(
            f"{path}: {len(repeats)} of {len(lines)} demonstrations repeat an earlier one "
            f"(lines {shown}); each copy counts again in a fit; remove them unless that "
            "is meant",
            DuplicateDemonstrationsWarning,
            stacklevel=3,
        )


def write_demos(path: str | Path, demos: Iterable[Demonstration]) -> Path:
    """Write demonstrations as JSON Lines, atomically (parent folders are created)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for demo in demos:
        record = {k: v for k, v in asdict(demo).items() if v is not None}
        lines.append(json.dumps(record, ensure_ascii=False))
    atomic_write_text(Path(path), "\n".join(lines) + "\n")
    return Path(path)
