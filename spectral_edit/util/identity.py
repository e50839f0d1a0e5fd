"""Shareable identities of local files and folders: names and content hashes, never paths.

Files that users share (editors, reports, store records) must not record absolute local
paths: they leak user and folder names, and mean nothing on another machine. What they
record instead is a path's *identity*: its final name and a digest of its content, so that
a reader can tell whether two files or folders are the same without knowing where they
lay. :func:`shareable_name` is the one rule that turns a path-like string into a name safe
to record; :func:`path_identity` adds the content digest.

Digests: a file's is the sha256 of its bytes. A folder's (:func:`folder_fingerprint`,
e.g. a model folder) covers every regular file under it, hidden ones excepted, by relative
path and size: files up to :data:`WHOLE_FILE_LIMIT` bytes are hashed whole, larger ones
(weights) by :data:`SAMPLED_BLOCKS` evenly spaced blocks, so that a multi-GB folder costs
a few reads, not a full pass; replacing the weights by others of the same size still
changes it (unless the new weights agree on every sampled block).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from .atomic import sha256_file

__all__ = [
    "SAMPLED_BLOCKS",
    "WHOLE_FILE_LIMIT",
    "folder_fingerprint",
    "is_local_path",
    "path_identity",
    "shareable_name",
]

WHOLE_FILE_LIMIT = 64 << 20
"""Files of a folder up to this size (64 MiB) are hashed whole by :func:`folder_fingerprint`."""

SAMPLED_BLOCKS = 16
"""How many evenly spaced blocks of a larger file :func:`folder_fingerprint` hashes."""

_BLOCK = 1 << 20


def is_local_path(text: str | os.PathLike[str]) -> bool:
    """Whether ``text`` would reveal where something lies on this machine: an absolute
    path (POSIX or Windows), one starting with ``~``, or one climbing out with ``..``."""
    value = os.fspath(text)
    if value.startswith("~") or PurePosixPath(value).is_absolute():
        return True
    if PureWindowsPath(value).is_absolute() or PureWindowsPath(value).drive:
        return True
    return ".." in PurePosixPath(value.replace("\\", "/")).parts


def shareable_name(text: str | os.PathLike[str]) -> str:
    """``text`` as it may be recorded in a shared file: a local path (see
    :func:`is_local_path`) becomes its final component (``/home/a/models/tiny`` →
    ``tiny``); anything else (a Hub id ``owner/name``, a built-in name, a relative path
    inside the working folder) is kept as given. The result never holds an absolute path."""
    value = os.fspath(text)
    if not is_local_path(value):
        return value
    name = PureWindowsPath(value).name if "\\" in value else PurePosixPath(value).name
    return name or value.strip("/\\~") or "."


def _sampled_digest(path: Path, size: int) -> str:
    """sha256 of ``SAMPLED_BLOCKS`` evenly spaced ``_BLOCK``-byte blocks of a large file."""
    digest = hashlib.sha256()
    step = max((size - _BLOCK) // max(SAMPLED_BLOCKS - 1, 1), 1)
    with open(path, "rb") as handle:
        for index in range(SAMPLED_BLOCKS):
            handle.seek(min(index * step, size - _BLOCK))
            digest.update(handle.read(_BLOCK))
    return digest.hexdigest()


def folder_fingerprint(path: str | os.PathLike[str]) -> str:
    """A hex sha256 identifying a folder's content (see the module docstring): the same
    for two folders holding the same files (by relative path, size and content), whatever
    their location or timestamps."""
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(root.rglob("*")):
        relative = file.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not file.is_file():
            continue
        size = file.stat().st_size
        whole = size <= max(WHOLE_FILE_LIMIT, SAMPLED_BLOCKS * _BLOCK)
        content = sha256_file(file) if whole else _sampled_digest(file, size)
        digest.update(f"{relative.as_posix()}\0{size}\0{content}\n".encode())
    return digest.hexdigest()


def path_identity(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{"name": ..., "sha256": ...}`` of an existing file or folder: its
    :func:`shareable_name` and the sha256 of its bytes (a file) or its
    :func:`folder_fingerprint` (a folder). JSON-ready; holds no local path.

    Raises:
        FileNotFoundError: ``path`` is neither a file nor a folder.
    """
    location = Path(path)
    if location.is_dir():
        content = folder_fingerprint(location)
    elif location.is_file():
        content = sha256_file(location)
    else:
        raise FileNotFoundError(f"{location}: no such file or folder")
    return {"name": shareable_name(location.resolve()), "sha256": content}
