"""CrowS-Pairs: minimal sentence pairs, one more and one less stereotyping.

File: ``crows_pairs/crows_pairs_anonymized.csv`` (upstream nyu-mll/crows-pairs).  It is a
standard CSV (quoted fields may contain commas, doubled quotes and newlines; UTF-8) whose
first column is an unnamed row index; other upstream columns (``id``, ``annotations``,
``anon_writer``, ``anon_annotators``) are ignored.  Required columns:
``sent_more, sent_less, stereo_antistereo, bias_type``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import DataFormatError
from .readers import iter_csv_records

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
    pairs: list[CrowsPair] = []
    for line, values in iter_csv_records(p, _COLUMNS):
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
