"""Who is writing where: live-process checks, and the exclusive lock of an output folder.

A long job (``sea demo``, ``sea compare``, ``sea tune``) holds :func:`folder_lock` on its
output folder for its whole run, so that two runs never interleave their stages in one
folder. The lock is an OS file lock (``flock`` on POSIX) on ``<folder>/.sea.lock``, and the
file records its holder (pid, host tag, command, start time), so a refused run can name
it. Invariants:

- at most one holder per folder at a time, across processes and within one process;
- a holder that dies (even by SIGKILL) releases the lock with its process: a stale lock
  file is recovered by simply acquiring it again (its old content is overwritten);
- the lock file is never deleted (deleting it while another process opens it would give
  two holders on two files); it is left empty when released.

Where the OS has no ``fcntl`` (Windows), :mod:`filelock` gives the same exclusion but the
holder cannot be named.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "FolderInUse", "Holder", "folder_lock", "host_tag", "process_alive"]

LOCK_FILE = ".sea.lock"


def host_tag() -> str:
    """A short, stable tag of this machine (a hash of its host name, not the name)."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of *this* machine is running. Errs on the side of "alive"
    (unknown platforms, another user's process, a recycled pid)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":  # pragma: no cover - os.kill(pid, 0) would kill it there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by someone else
        return True
    return True


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a folder's lock."""

    pid: int
    host: str
    command: str
    since: str

    def describe(self) -> str:
        """``pid 1234 (sea demo, since 2025-01-01T12:00:00)`` (host named if not ours)."""
        where = "" if self.host == host_tag() else f" on another machine (host tag {self.host})"
        return f"pid {self.pid}{where} ({self.command}, since {self.since})"


class FolderInUse(RuntimeError):
    """Another run holds the output folder's lock."""

    def __init__(self, folder: Path, holder: Holder | None) -> None:
        who = holder.describe() if holder is not None else "another process (pid unknown)"
        super().__init__(
            f"the output folder {folder} is in use by {who}. Wait for that run to finish "
            f"(or stop it), or choose another output folder; two runs into one folder would "
            f"mix their results."
        )
        self.folder = folder
        self.holder = holder


def _read_holder(path: Path) -> Holder | None:
    """The holder recorded in the lock file, or ``None`` (empty, unreadable, garbled)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Holder(int(data["pid"]), str(data["host"]), str(data["command"]), data["since"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _record(fd: int, command: str) -> None:
    """Write this process as the holder into the locked file ``fd``."""
    since = time.strftime("%Y-%m-%dT%H:%M:%S")
    holder = Holder(os.getpid(), host_tag(), command, since)
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(asdict(holder)).encode(), 0)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str], command: str) -> Iterator[Path]:
    """Hold the exclusive lock of ``folder`` (which must exist) for the block; yields the
    lock file. Raises :class:`FolderInUse` at once (no waiting) if another run holds it.
    ``command`` is recorded for a refused run's message (e.g. ``"sea demo"``)."""
    path = Path(folder) / LOCK_FILE
    if fcntl is None:  # pragma: no cover - Windows
        yield from _filelock(Path(folder), path)
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderInUse(Path(folder), _read_holder(path)) from None
        try:
            _record(fd, command)
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _filelock(folder: Path, path: Path) -> Iterator[Path]:  # pragma: no cover - Windows
    from filelock import FileLock, Timeout

    try:
        with FileLock(str(path), timeout=0):
            yield path
    except Timeout:
        raise FolderInUse(folder, None) from None
