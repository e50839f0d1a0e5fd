"""Atomic file and folder writes, and file hashing.

Every file the project writes goes through these helpers, so that a reader never sees a
half-written file: data is written to a temporary sibling in the *same directory* (hence
the same file system), flushed with ``fsync``, then moved onto the target with
``os.replace`` (atomic on POSIX and Windows). On any error the temporary is removed and
the target is left as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "atomic_directory",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "sha256_file",
]

_CHUNK = 1 << 20


def _temp_sibling(path: Path, *, suffix: str) -> Path:
    """A fresh, unused name next to ``path``: ``.<name>.<random>.tmp<suffix>`` (hidden)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp{suffix}")


def _fsync_file(path: Path) -> None:
    """Flush ``path``'s data to disk (no-op for a path that is not a regular file)."""
    if not path.is_file():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Flush a directory entry (so a rename survives a crash). Best effort: not on Windows."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write instead of ``path``; move it into place on success.

    The temporary lives in ``path``'s directory and ends with the same suffix (so writers
    that look at the extension, e.g. ``safetensors.torch.save_file`` or ``savefig``, work
    on it). It is created empty with the usual permissions (``0o666`` less the umask).
    On normal exit it is fsync'ed and ``os.replace``'d onto ``path``; if the body raises,
    it is deleted and ``path`` is untouched. The parent directory must exist.

    Example::

        with atomic_path("editor.safetensors") as tmp:
            save_file(tensors, tmp)
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise FileNotFoundError(f"cannot write {target}: directory {target.parent} does not exist")
    tmp = _temp_sibling(target, suffix=target.suffix)
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    os.close(fd)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(
                f"the temporary file {tmp} for {target} was removed before commit"
            )
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (all or nothing)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically, encoded with ``encoding`` and ``\\n`` newlines."""
    atomic_write_bytes(path, text.encode(encoding))


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory to fill instead of ``path``; rename it into place on success.

    The temporary directory is a hidden sibling of ``path``. On normal exit every file in
    it is fsync'ed and the directory is renamed to ``path`` in one step, so ``path`` either
    does not exist or is complete. ``path`` must not exist at that moment (a
    ``FileExistsError`` is raised and the temporary removed); callers that may race
    should hold a lock. If the body raises, the temporary directory is deleted.
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise FileNotFoundError(f"cannot create {target}: directory {target.parent} does not exist")
    tmp = _temp_sibling(target, suffix="")
    tmp.mkdir()
    try:
        yield tmp
        for file in tmp.rglob("*"):
            _fsync_file(file)
        if target.exists():
            raise FileExistsError(f"cannot move the new folder into place: {target} already exists")
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(target.parent)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 digest of the file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()
