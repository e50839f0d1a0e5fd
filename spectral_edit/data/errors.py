"""The exceptions of :mod:`spectral_edit.data`.

Every parser reports bad input through :class:`DataFormatError`, whose message always
names the file and, where it applies, the 1-based line number (``path:line: message``).  A
file that cannot be found (or fetched), or read (a directory, no permission), is a
:class:`DataFileMissing`, a :class:`FileNotFoundError`, so callers may catch either;
:class:`DownloadError` and :class:`ChecksumMismatch` are the ways a permitted download fails.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "ChecksumMismatch",
    "DataFileMissing",
    "DataFormatError",
    "DownloadError",
]


class DataFileMissing(FileNotFoundError):
    """A benchmark file is not in the data directory and could not (or may not) be fetched.

    The message says which file, which data directory was searched and how to provide it.
    """


class DownloadError(DataFileMissing):
    """A download failed (network error, HTTP error, short read); nothing was left behind."""


class ChecksumMismatch(DownloadError):
    """A downloaded file did not have its pinned sha256; it was deleted, nothing was kept."""


class DataFormatError(ValueError):
    """A data file (a benchmark file, or a demonstrations file: its subclass
    :class:`~spectral_edit.demos.format.DemoFormatError`) is malformed.

    Attributes:
        path: the offending file.
        line: 1-based line number of the offending record, or ``None`` when the problem is
            not tied to one line (e.g. a missing CSV header).
        reason: the bare description, without the location prefix.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str, line: int | None = None):
        self.path = Path(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else f"{self.path}"
        super().__init__(f"{where}: {reason}")
