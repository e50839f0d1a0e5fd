"""Atomic file and folder writes, and file hashing.

Every file the project writes goes through these helpers, so that a reader never sees a
half-written file: data is written to a temporary sibling in the *same directory* (hence
the same file system), flushed with ``fsync``, then moved onto the target with
``os.replace`` (atomic on POSIX and Windows). On any error the temporary is removed and
the target is left as it was.

Output behaviour, the same for every command and writer:

- missing parent folders are created;
- an existing target *file* is replaced atomically (no ``--force`` needed: a reader sees
  the old file or the new one, and the old one stays if the write fails);
- a target that cannot be written (a folder where a file should go, a parent that is a
  file, no permission, a full disk) raises :class:`OutputError` naming the path and what
  to do, with nothing written;
- new files get the usual permissions, ``0o666`` less the umask, whatever library wrote
  the temporary (``safetensors`` creates its files ``0o600``);
- a temporary is named ``.<name>.<host>-<pid>-<random>.tmp<suffix>``: one left behind by
  a writer that was killed (SIGKILL, power loss) is removed by the next write to the same
  target on the same machine once that pid is no longer running.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import re
import secrets
import shutil
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .locks import host_tag, process_alive

__all__ = [
    "OutputError",
    "atomic_directory",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_writable",
    "ensure_folder",
    "remove_stale_temporaries",
    "sha256_file",
]

_CHUNK = 1 << 20

TEST_HOLD_ENV = "SEA_TEST_HOLD_BEFORE_COMMIT"
"""Test-only hook: a glob of target names (e.g. ``editor.safetensors``). A write to a
matching target prints ``sea-test: holding <name>`` to stderr and sleeps
``$SEA_TEST_HOLD_SECONDS`` (default 60) just before committing, with the temporary
complete on disk, so a test can interrupt or kill the writer at that point. Unset, as in
normal use, it does nothing."""
HOLD_SECONDS_ENV = "SEA_TEST_HOLD_SECONDS"


class OutputError(OSError):
    """An output file or folder cannot be written: the message names the path, why, and
    what to do. Nothing was written (an earlier file there is unchanged)."""


def _refusal(target: Path, reason: str) -> OutputError:
    return OutputError(
        f"cannot write {target}: {reason}. Choose another output location (or fix its "
        f"permissions) and rerun."
    )


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def _temp_sibling(path: Path, *, suffix: str) -> Path:
    """A fresh, unused name next to ``path``, hidden, naming this host and process."""
    token = f"{host_tag()}-{os.getpid()}-{secrets.token_hex(6)}"
    return path.with_name(f".{path.name}.{token}.tmp{suffix}")


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries of ``path`` left by dead writers of this machine; returns
    them. A temporary of a live process, of another machine, or not in this module's
    naming scheme is left alone."""
    target = Path(path)
    pattern = re.compile(rf"\.{re.escape(target.name)}\.([0-9a-f]{{8}})-(\d+)-[0-9a-f]{{12}}\.tmp")
    removed = []
    with contextlib.suppress(OSError):
        for sibling in target.parent.iterdir():
            match = pattern.match(sibling.name)
            if match is None or match[1] != host_tag() or process_alive(int(match[2])):
                continue
            if sibling.is_dir() and not sibling.is_symlink():
                shutil.rmtree(sibling, ignore_errors=True)
            else:
                sibling.unlink(missing_ok=True)
            removed.append(sibling)
    return removed


def ensure_folder(path: str | os.PathLike[str]) -> Path:
    """Create the folder ``path`` (and its parents) if missing; :class:`OutputError` where
    it cannot be (a file in the way, no permission)."""
    folder = Path(path)
    blocker = _file_in_the_way(folder)
    if blocker is not None:
        raise _refusal(folder, f"{blocker} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _refusal(folder, _reason(error)) from error
    return folder


def _file_in_the_way(folder: Path) -> Path | None:
    """``folder`` or its nearest existing ancestor, where that is not a folder."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def check_writable(path: str | os.PathLike[str], *, folder: bool = False) -> Path:
    """Check, before any expensive work, that a file (or with ``folder``, a folder) can
    be written at ``path``; creates nothing. :class:`OutputError` if it cannot: a file in
    the way, a folder where a file should go, or an existing ancestor that is not
    writable. (The write itself still checks: this is an early warning, not a promise.)"""
    target = Path(path)
    if not folder and target.is_dir():
        raise _refusal(target, "it is a folder; name a file")
    start = target if folder else target.parent
    blocker = _file_in_the_way(start)
    if blocker is not None:
        raise _refusal(target, f"{blocker} is a file, not a folder")
    existing = next((p for p in (start, *start.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise _refusal(target, f"the folder {existing} is not writable")
    return target


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


def _test_hold(target: Path) -> None:
    """The test-only pause of :data:`TEST_HOLD_ENV` (nothing when it is unset)."""
    pattern = os.environ.get(TEST_HOLD_ENV)
    if pattern and fnmatch.fnmatch(target.name, pattern):
        print(f"sea-test: holding {target.name}", file=sys.stderr, flush=True)
        time.sleep(float(os.environ.get(HOLD_SECONDS_ENV, "60")))


def _create_temporary(target: Path) -> tuple[Path, int]:
    """Create ``target``'s empty temporary (parents made, stale ones removed); returns it
    and the permission bits a new file gets here (``0o666`` less the umask)."""
    ensure_folder(target.parent)
    if target.is_dir():
        raise _refusal(target, "it is a folder; name a file")
    remove_stale_temporaries(target)
    tmp = _temp_sibling(target, suffix=target.suffix)
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except OSError as error:
        raise _refusal(target, _reason(error)) from error
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
    return tmp, mode


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write instead of ``path``; move it into place on success.

    The temporary lives in ``path``'s directory (created if missing) and ends with the
    same suffix (so writers that look at the extension, e.g.
    ``safetensors.torch.save_file`` or ``savefig``, work on it). On normal exit it gets
    the usual permissions (``0o666`` less the umask, whatever mode the writer gave it),
    is fsync'ed and ``os.replace``'d onto ``path``; if the body raises, it is deleted and
    ``path`` is untouched. An ``OSError`` of creating the temporary or of the commit (no
    permission, a folder at ``path``) is raised as :class:`OutputError`; what the body
    raises passes unchanged.

    Example::

        with atomic_path("editor.safetensors") as tmp:
            save_file(tensors, tmp)
    """
    target = Path(path)
    tmp, mode = _create_temporary(target)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(
                f"the temporary file {tmp} for {target} was removed before commit"
            )
        _test_hold(target)
        _commit(tmp, target, mode)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


def _commit(tmp: Path, target: Path, mode: int) -> None:
    """Give ``tmp`` the permissions ``mode``, flush it and move it onto ``target``; an
    ``OSError`` is :class:`OutputError` (errors of the writer itself pass unchanged)."""
    try:
        os.chmod(tmp, mode)
        _fsync_file(tmp)
        os.replace(tmp, target)
    except OSError as error:
        raise _refusal(target, _reason(error)) from error


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (all or nothing); :class:`OutputError` where
    it cannot be written."""
    with atomic_path(path) as tmp:
        try:
            tmp.write_bytes(data)
        except OSError as error:  # e.g. a full disk
            raise _refusal(Path(path), _reason(error)) from error


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically, encoded with ``encoding`` and ``\\n`` newlines."""
    atomic_write_bytes(path, text.encode(encoding))


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory to fill instead of ``path``; rename it into place on success.

    The temporary directory is a hidden sibling of ``path`` (whose parent is created if
    missing; stale temporaries of dead writers are removed first). On normal exit every
    file in it is fsync'ed and the directory is renamed to ``path`` in one step, so
    ``path`` either does not exist or is complete. ``path`` must not exist at that moment
    (a ``FileExistsError`` is raised and the temporary removed); callers that may race
    should hold a lock. If the body raises, the temporary directory is deleted.
    """
    target = Path(path)
    ensure_folder(target.parent)
    remove_stale_temporaries(target)
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
