"""CrowS-Pairs: minimal sentence pairs, one more and one less stereotyping.

File: ``crows_pairs/crows_pairs_anonymized.csv`` (upstream nyu-mll/crows-pairs).  It is a
standard CSV (quoted fields may contain commas, doubled quotes and newlines; UTF-8) whose
first column is an unnamed row index; other upstream columns (``id``, ``annotations``,
``anon_writer``, ``anon_annotators``) are ignored.  Required columns:
``sent_more, sent_less, stereo_antistereo, bias_type``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import DataFormatError

__all__ = ["STEREO_VALUES", "CrowsPair", "load_crows_pairs"]

STEREO_VALUES = ("stereo", "antistereo")
_COLUMNS = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")


@dataclass(frozen=True)
class CrowsPair:
    """One pair. ``stereo_antistereo`` is ``"stereo"`` or ``"antistereo"``; all fields
    are non-blank; ``sent_more`` is the sentence that is *more* stereotyping."""

    sent_more: str
    sent_less: str
    stereo_antistereo: str
    bias_type: str


def load_crows_pairs(path: str | os.PathLike[str]) -> list[CrowsPair]:
    """Load the CrowS-Pairs CSV, in file order.

    Sentences are kept exactly as in the file (as lm-evaluation-harness scores them); the
    label columns are stripped of surrounding whitespace.

    Raises:
        DataFormatError: missing columns in the header, a row with the wrong number of
            fields, a blank required field, or a ``stereo_antistereo`` value other than
            ``stereo``/``antistereo``; the message names the file and the row's first line.
    """
    p = Path(path)
    try:
        with open(p, encoding="utf-8-sig", newline="") as fh:
            return _read(p, fh)
    except UnicodeDecodeError as exc:
        raise DataFormatError(p, f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except csv.Error as exc:
        raise DataFormatError(p, f"CSV syntax error: {exc}") from exc


def _read(p: Path, fh: Iterable[str]) -> list[CrowsPair]:
    reader = csv.reader(fh)
    header = next(reader, None)
    if header is None:
        raise DataFormatError(p, "empty file (no header row)", 1)
    header = [h.strip() for h in header]
    missing = [c for c in _COLUMNS if c not in header]
    if missing:
        raise DataFormatError(p, f"header lacks column(s) {missing}; found {header}", 1)
    col = {name: header.index(name) for name in _COLUMNS}
    pairs: list[CrowsPair] = []
    start = reader.line_num + 1
    for fields in reader:
        line, start = start, reader.line_num + 1
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            raise DataFormatError(
                p, f"row has {len(fields)} fields, header has {len(header)}", line
            )
        values = {name: fields[i] for name, i in col.items()}
        for name, value in values.items():
            if not value.strip():
                raise DataFormatError(p, f"column {name!r} is empty", line)
        values["stereo_antistereo"] = values["stereo_antistereo"].strip()
        values["bias_type"] = values["bias_type"].strip()
        if values["stereo_antistereo"] not in STEREO_VALUES:
            raise DataFormatError(
                p,
                f"stereo_antistereo must be one of {list(STEREO_VALUES)}, "
                f"got {values['stereo_antistereo']!r}",
                line,
            )
        pairs.append(CrowsPair(**values))
    return pairs
