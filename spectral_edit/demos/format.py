"""Demonstrations: a JSON Lines file of ``(prompt, positive, negative[, neutral])`` records.

One object per line; blank lines are skipped; the three answers are non-empty strings,
``neutral`` (optional) a string; any other field is an error naming the file and line.
The activations SEA is fitted on are captured from them in
:mod:`spectral_edit.demos.activations`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..util.atomic import atomic_write_text


class DemoFormatError(ValueError):
    """A demonstrations file has a malformed line (the message names file and line)."""


@dataclass(frozen=True)
class Demonstration:
    """One demonstration; answers are appended to the prompt after a single space."""

    prompt: str
    positive: str
    negative: str
    neutral: str | None = None


def read_demos(path: str | Path) -> list[Demonstration]:
    """Parse a demonstrations file; blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DemoFormatError(f"{path}: no such demonstrations file")
    demos = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DemoFormatError(f"{path}:{number}: invalid JSON ({error.msg})") from None
            demos.append(_parse_record(record, f"{path}:{number}"))
    if not demos:
        raise DemoFormatError(f"{path}: no demonstrations in the file")
    return demos


def _parse_record(record: object, where: str) -> Demonstration:
    if not isinstance(record, dict):
        raise DemoFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
    values = {}
    for field in ("prompt", "positive", "negative"):
        value = record.get(field)
        if not isinstance(value, str) or not value.strip():
            raise DemoFormatError(f"{where}: field {field!r} must be a non-empty string")
        values[field] = value
    neutral = record.get("neutral")
    if neutral is not None and not isinstance(neutral, str):
        raise DemoFormatError(f"{where}: field 'neutral' must be a string when present")
    unknown = set(record) - {"prompt", "positive", "negative", "neutral"}
    if unknown:
        raise DemoFormatError(f"{where}: unknown fields {sorted(unknown)}")
    return Demonstration(neutral=neutral, **values)


def write_demos(path: str | Path, demos: Iterable[Demonstration]) -> Path:
    """Write demonstrations as JSON Lines, atomically (parent folders are created)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for demo in demos:
        record = {k: v for k, v in asdict(demo).items() if v is not None}
        lines.append(json.dumps(record, ensure_ascii=False))
    atomic_write_text(Path(path), "\n".join(lines) + "\n")
    return Path(path)
