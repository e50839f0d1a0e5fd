"""Find benchmark files in a data directory and, when they are pinned, download them.

Layout: every benchmark file lives at a fixed *relative path* inside one data directory
(``truthfulqa/mc_task_v0.json``, ``bbq/official/Age.jsonl``, ``control/piqa.jsonl``, ...).
The data directory is chosen by :func:`data_dir`: an explicit argument (the CLI's
``--data-dir``), else the ``SEA_DATA_DIR`` environment variable, else a per-user cache folder.

:data:`~spectral_edit.data.registry.KNOWN_FILES` records, for each relative path, the
upstream URL and the sha256 of the exact file this project was checked against (see
:mod:`~spectral_edit.data.registry`).  :func:`resolve` returns an existing file
untouched; a missing file is downloaded only when both its URL and its sha256 are pinned
(the download is verified and written atomically), never when ``SEA_OFFLINE=1``.  Anything
else raises :class:`DataFileMissing` with a message that says where the file was expected
and how to provide it.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import platformdirs

from ..util.atomic import atomic_path
from ..util.progress import progress_bar
from .errors import ChecksumMismatch, DataFileMissing, DownloadError
from .registry import KNOWN_FILES, RemoteFile

__all__ = [
    "ENV_DATA_DIR",
    "ENV_OFFLINE",
    "data_dir",
    "download",
    "offline",
    "resolve",
]

ENV_DATA_DIR = "SEA_DATA_DIR"
ENV_OFFLINE = "SEA_OFFLINE"
_CHUNK = 1 << 20
_DEFAULT_SOURCE = "the default user cache"


# --------------------------------------------------------------------------- data directory


def _data_dir_and_source(explicit: str | os.PathLike[str] | None) -> tuple[Path, str]:
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser(), "given explicitly (--data-dir)"
    env = os.environ.get(ENV_DATA_DIR, "").strip()
    if env:
        return Path(env).expanduser(), f"from ${ENV_DATA_DIR}"
    return platformdirs.user_cache_path("spectral-edit") / "data", _DEFAULT_SOURCE


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: ``explicit`` if given, else ``$SEA_DATA_DIR``, else the user cache.

    The folder need not exist yet (downloads create it).
    """
    return _data_dir_and_source(explicit)[0]


def offline() -> bool:
    """True when ``SEA_OFFLINE`` is set to a true value (1/true/yes/on): no downloads."""
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in {"1", "true", "yes", "on"}


def _check_relpath(relpath: str) -> str:
    """Normalise ``relpath`` to POSIX form; refuse absolute paths and ``..`` components."""
    pure = PurePosixPath(relpath.replace("\\", "/"))
    if pure.is_absolute() or not pure.parts or ".." in pure.parts:
        raise ValueError(f"data file path must be relative inside the data dir, got {relpath!r}")
    return pure.as_posix()


# --------------------------------------------------------------------------- resolve


def _how_to_provide(rel: str, target: Path, known: RemoteFile | None) -> str:
    if known is not None and known.url is not None:
        first = f"  - download {known.url}\n    and save it as {target}, or"
    else:
        first = f"  - put the file at {target}, or"
    lines = [first, f"  - point ${ENV_DATA_DIR} (or --data-dir) at a folder that contains {rel}"]
    if known is not None and known.sha256 is not None:
        lines.append(f"  (expected sha256: {known.sha256})")
    if known is not None and known.note:
        lines.append(f"  note: {known.note}")
    return "\n".join(lines)


def _check_chosen_folder(root: Path, source: str) -> None:
    """A data directory the user chose (``--data-dir`` or ``$SEA_DATA_DIR``) must be an
    existing folder: a typo is :class:`DataFileMissing` naming it, never a download into a
    new folder. Only the default user cache is created on demand."""
    if source == _DEFAULT_SOURCE or root.is_dir():
        return
    what = "is not a folder" if root.exists() else "does not exist"
    raise DataFileMissing(
        f"data dir {root} ({source}) {what}. Fix the path, create the folder "
        f"(mkdir -p {root}), or leave --data-dir and ${ENV_DATA_DIR} unset to use the "
        "default user cache."
    )


def resolve(
    relpath: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    timeout: float = 30,
    progress: bool = True,
) -> Path:
    """Return the path of ``relpath`` inside the data directory, fetching it if allowed.

    An existing file is returned as is (it is not re-hashed).  A missing file is downloaded
    only if it is in :data:`~spectral_edit.data.registry.KNOWN_FILES` with both a URL and a
    sha256, ``download`` is true and ``SEA_OFFLINE`` is not set.

    Raises:
        DataFileMissing: the file is absent and may not be fetched; the message names the
            file, the data directory searched (and how it was chosen) and how to provide it.
            Also a data directory chosen explicitly (argument or ``$SEA_DATA_DIR``) that is
            not an existing folder (the default user cache is created on demand).
        DownloadError / ChecksumMismatch: a permitted download failed (both subclass
            :class:`DataFileMissing`); nothing is left behind.
        ValueError: ``relpath`` is absolute or escapes the data directory.
    """
    rel = _check_relpath(relpath)
    root, source = _data_dir_and_source(data_dir)
    _check_chosen_folder(root, source)
    target = root.joinpath(*rel.split("/"))
    if target.is_file():
        return target
    known = KNOWN_FILES.get(rel)
    head = f"data file {rel!r} not found at {target} (data dir {root}, {source})."
    if known is None:
        raise DataFileMissing(
            f"{head}\nIt is not a file this package knows how to fetch. To provide it:\n"
            + _how_to_provide(rel, target, None)
        )
    if not known.downloadable:
        why = "no upstream URL is known" if known.url is None else "no sha256 is pinned"
        raise DataFileMissing(
            f"{head}\nIt is not pinned ({why}), so it is not downloaded automatically. "
            "To provide it manually:\n" + _how_to_provide(rel, target, known)
        )
    if not download or offline():
        reason = f"${ENV_OFFLINE} is set" if offline() else "downloads are disabled"
        raise DataFileMissing(
            f"{head}\nIt was not downloaded because {reason}. To provide it:\n"
            + _how_to_provide(rel, target, known)
        )
    assert known.url is not None and known.sha256 is not None
    try:
        return _download(known.url, target, known.sha256, timeout=timeout, progress=progress)
    except DownloadError as exc:
        hint = "\nTo provide it manually:\n" + _how_to_provide(rel, target, known)
        raise type(exc)(f"{exc}{hint}") from exc


# --------------------------------------------------------------------------- download


def _stream_to(url: str, fh: BinaryIO, timeout: float, progress: bool, label: str) -> str:
    """Copy the body at ``url`` into the open binary file ``fh``; return its sha256 hex."""
    h = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "spectral-edit"})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with progress_bar(total, progress, label, "B", unit_scale=True, leave=False) as bar:
            while True:
                chunk = resp.read(_CHUNK)
                if not chunk:
                    break
                h.update(chunk)
                fh.write(chunk)
                bar.update(len(chunk))
    return h.hexdigest()


def download(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str,
    *,
    timeout: float = 30,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest``, verify its sha256, and move it into place atomically.

    The body is streamed into a temporary sibling of ``dest``
    (:func:`~spectral_edit.util.atomic.atomic_path`), hashed on the way, and only moved
    onto ``dest`` when the digest equals ``sha256``.  On any failure the temporary file is
    removed and ``dest`` is left untouched (absent if it was).

    Raises:
        DataFileMissing: ``SEA_OFFLINE`` forbids downloads.
        DownloadError: network/HTTP failure, timeout or truncated body (names the URL).
        ChecksumMismatch: the body's sha256 differs from ``sha256``.
        ValueError: ``url`` is not http(s) or ``sha256`` is not a 64-digit hex string.
    """
    return _download(url, Path(dest), sha256, timeout=timeout, progress=progress)


def _describe(exc: BaseException) -> str:
    """Short human description of a network failure."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    reason = getattr(exc, "reason", None) or exc
    return f"{type(exc).__name__}: {reason}"


def _download(url: str, dest: Path, sha256: str, *, timeout: float, progress: bool) -> Path:
    """:func:`download` (``resolve`` has an argument of that name, hence this one)."""
    expected = sha256.strip().lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    if not url.lower().startswith(("http://", "https://")):
        raise ValueError(f"only http(s) URLs can be downloaded, got {url!r}")
    if offline():
        raise DataFileMissing(
            f"refusing to download {url} to {dest}: ${ENV_OFFLINE} is set; "
            f"fetch it yourself and put it at {dest}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as fh:
            try:
                digest = _stream_to(url, fh, timeout, progress, dest.name)
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                raise DownloadError(f"could not download {url}: {_describe(exc)}") from exc
        if digest != expected:
            raise ChecksumMismatch(
                f"checksum mismatch for {url}: expected sha256 {expected}, got {digest}; "
                "the download was discarded (the upstream file may have changed)"
            )
    return dest
