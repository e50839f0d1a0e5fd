"""Validated readers shared by every benchmark parser: JSON Lines, JSON arrays and CSV
records with their 1-based line numbers, and typed field access.

Every failure is a :class:`~spectral_edit.data.errors.DataFormatError` naming the file and,
where it applies, the line, so the per-dataset modules stay short and their error messages
uniform; a file that is absent, a directory or unreadable is a
:class:`~spectral_edit.data.errors.DataFileMissing`. JSON objects with a duplicate key, and
strings holding a lone UTF-16 surrogate escape, are refused (instead of silently keeping
the last value, or failing later in a tokenizer); UTF-8 input may start with a BOM (the
demonstrations reader, :func:`spectral_edit.demos.format.read_demos`, reads through
:func:`iter_json_lines` and so accepts and refuses the same).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import DataFileMissing, DataFormatError

__all__ = [
    "iter_csv_records",
    "iter_json_array",
    "iter_json_lines",
    "require_int",
    "require_str",
    "require_str_list",
]


# --------------------------------------------------------------------------- JSON readers


class _RefusedValue(ValueError):
    """A JSON text that decodes but is refused: a duplicate key or a lone surrogate."""


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_strings(value: Any) -> None:
    """Refuse a string (or a string in a list, at any depth) holding a lone UTF-16 surrogate.

    Only a ``\\udXXX`` escape can put one there (decoded UTF-8 never holds one); such a
    string is not text: it cannot be encoded, written or tokenised.
    """
    if isinstance(value, str):
        if not value.isascii() and _LONE_SURROGATE.search(value):
            raise _RefusedValue(
                f"string {value[:40]!r} holds a lone UTF-16 surrogate escape "
                "(\\ud800-\\udfff without its pair); fix or remove the escape"
            )
    elif isinstance(value, list):
        for item in value:
            _check_strings(item)


def _checked_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook``: refuse duplicate keys (instead of silently keeping the last)
    and lone surrogates in keys and values (nested objects were checked by their own call)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _RefusedValue(f"duplicate key {key!r} in a JSON object; keep only one")
        _check_strings(key)
        _check_strings(value)
        out[key] = value
    return out


_DECODER = json.JSONDecoder(object_pairs_hook=_checked_object)


def _json_error(exc: Exception, path: Path, line: int) -> DataFormatError:
    """The :class:`DataFormatError` for a failure of :data:`_DECODER` on a value at ``line``.

    Besides invalid JSON and refused values, the decoder can fail on nesting too deep for
    the recursion limit and on integers too long to convert (Python's 4300-digit limit).
    """
    if isinstance(exc, json.JSONDecodeError):
        return DataFormatError(path, f"invalid JSON: {exc.msg} (column {exc.colno})", line)
    if isinstance(exc, RecursionError):
        return DataFormatError(path, "invalid JSON: nested too deeply", line)
    if isinstance(exc, _RefusedValue):
        return DataFormatError(path, str(exc), line)
    return DataFormatError(path, f"invalid JSON: {exc}", line)


def _decode(text: str, path: Path, line: int) -> Any:
    """Decode one JSON value, turning any failure into a :class:`DataFormatError` at ``line``."""
    try:
        return _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        raise _json_error(exc, path, line) from exc


def _read_text(path: Path) -> str:
    """The text of a UTF-8 file; a leading BOM is dropped (BOMs are accepted everywhere:
    every benchmark and demonstrations reader goes through here).

    Raises:
        DataFileMissing: the file does not exist, is a directory or cannot be read.
        DataFormatError: bytes that are not UTF-8, naming the line and the byte offset.
    """
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise DataFileMissing(f"{path}: is a directory, not a file; pass the file") from None
    except FileNotFoundError:
        raise DataFileMissing(f"{path}: no such file; check the path") from None
    except OSError as exc:
        raise DataFileMissing(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataFormatError(
            path,
            f"not valid UTF-8: byte 0x{data[exc.start]:02x} at byte offset {exc.start} "
            f"({exc.reason}); save the file as UTF-8",
            line,
        ) from None


def iter_json_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSON Lines file.

    Invariants: line numbers are 1-based physical line numbers; blank (whitespace-only)
    lines are skipped; every yielded value is a JSON object (``dict``), anything else raises
    :class:`DataFormatError` naming the file and line.
    """
    p = Path(path)
    text = _read_text(p)
    # Split on "\n" only: str.splitlines() would also split on U+2028 & co., which JSON
    # allows unescaped inside strings.
    for lineno, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        obj = _decode(raw, p, lineno)
        if not isinstance(obj, dict):
            raise DataFormatError(p, f"expected a JSON object, got {type(obj).__name__}", lineno)
        yield lineno, obj


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def iter_json_array(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each element of a top-level JSON array of objects.

    The line number is the 1-based line on which the element starts, so errors found later
    (a missing field, a bad label) can still point at the right place in the file.
    """
    p = Path(path)
    text = _read_text(p)

    def line_at(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    i = _skip_ws(text, 0)
    if i >= len(text) or text[i] != "[":
        raise DataFormatError(p, "expected a JSON array (file must start with '[')", line_at(i))
    i = _skip_ws(text, i + 1)
    if i < len(text) and text[i] == "]":
        return
    last_pos, last_line = 0, 1
    while True:
        if i >= len(text):
            raise DataFormatError(p, "invalid JSON: unterminated array", line_at(len(text)))
        last_line += text.count("\n", last_pos, i)
        last_pos = i
        try:
            obj, end = _DECODER.raw_decode(text, i)
        except (ValueError, RecursionError) as exc:
            line = exc.lineno if isinstance(exc, json.JSONDecodeError) else last_line
            raise _json_error(exc, p, line) from exc
        if not isinstance(obj, dict):
            raise DataFormatError(p, f"expected a JSON object, got {type(obj).__name__}", last_line)
        yield last_line, obj
        i = _skip_ws(text, end)
        if i < len(text) and text[i] == ",":
            i = _skip_ws(text, i + 1)
            continue
        if i < len(text) and text[i] == "]":
            rest = _skip_ws(text, i + 1)
            if rest != len(text):
                raise DataFormatError(p, "unexpected data after the JSON array", line_at(rest))
            return
        raise DataFormatError(p, "invalid JSON: expected ',' or ']' in array", line_at(i))


# --------------------------------------------------------------------------- field checks


def _field(obj: dict[str, Any], key: str, path: Path, line: int | None) -> Any:
    if key not in obj:
        raise DataFormatError(path, f"missing field {key!r}", line)
    return obj[key]


def require_str(
    obj: dict[str, Any],
    key: str,
    path: str | os.PathLike[str],
    line: int | None,
    *,
    nonempty: bool = False,
) -> str:
    """Return ``obj[key]`` if it is a string (non-blank when ``nonempty``), else raise."""
    p = Path(path)
    value = _field(obj, key, p, line)
    if not isinstance(value, str):
        kind = type(value).__name__
        raise DataFormatError(p, f"field {key!r} must be a string, got {kind}", line)
    if nonempty and not value.strip():
        raise DataFormatError(p, f"field {key!r} is empty", line)
    return value


def require_int(
    obj: dict[str, Any],
    key: str,
    path: str | os.PathLike[str],
    line: int | None,
    *,
    low: int | None = None,
    high: int | None = None,
) -> int:
    """Return ``obj[key]`` if it is an integer (not a bool) in ``[low, high]``, else raise."""
    p = Path(path)
    value = _field(obj, key, p, line)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataFormatError(
            p, f"field {key!r} must be an integer, got {type(value).__name__}", line
        )
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else str(low)
        hi = "inf" if high is None else str(high)
        raise DataFormatError(p, f"field {key!r} = {value} is out of range [{lo}, {hi}]", line)
    return value


def require_str_list(
    obj: dict[str, Any],
    key: str,
    path: str | os.PathLike[str],
    line: int | None,
    *,
    min_len: int = 0,
) -> tuple[str, ...]:
    """Return ``obj[key]`` as a tuple of strings (at least ``min_len`` of them), else raise."""
    p = Path(path)
    value = _field(obj, key, p, line)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataFormatError(p, f"field {key!r} must be a list of strings", line)
    if len(value) < min_len:
        raise DataFormatError(
            p, f"field {key!r} has {len(value)} entries, expected at least {min_len}", line
        )
    return tuple(value)


def iter_csv_records(
    path: str | os.PathLike[str], columns: Sequence[str]
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(first line of the row, {column: raw value})`` for each non-blank CSV row.

    Accepts a UTF-8 BOM and CRLF or LF line ends, quoted fields with commas and newlines,
    and extra columns (ignored). Raises :class:`DataFormatError` naming the file and line
    for invalid UTF-8 (with its byte offset), CSV syntax errors, an empty file, a header
    without one of ``columns``, or a row whose field count differs from the header's; and
    :class:`DataFileMissing` for a file that is absent or unreadable.
    """
    p = Path(path)
    # The whole text is decoded first, so a UTF-8 error's byte offset is the file's own.
    reader = csv.reader(io.StringIO(_read_text(p), newline=""))
    try:
        yield from _csv_rows(reader, p, columns)
    except csv.Error as exc:
        raise DataFormatError(p, f"CSV syntax error: {exc}", reader.line_num) from exc


def _csv_rows(reader: Any, p: Path, columns: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """The rows of :func:`iter_csv_records`, read from ``reader`` (a ``csv.reader``)."""
    header = next(reader, None)
    if header is None:
        raise DataFormatError(p, "empty file (no header row)", 1)
    header = [h.strip() for h in header]
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataFormatError(p, f"header lacks column(s) {missing}; found {header}", 1)
    index = {name: header.index(name) for name in columns}
    start = reader.line_num + 1
    for fields in reader:
        line, start = start, reader.line_num + 1
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            raise DataFormatError(
                p, f"row has {len(fields)} fields, header has {len(header)}", line
            )
        yield line, {name: fields[i] for name, i in index.items()}
