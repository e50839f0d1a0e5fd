"""Running ``sea`` as a real process, for the signal and concurrency cases: start it, wait
for a point of its run, signal it, collect what it printed.

The point is the atomic writer's test-only hold (:data:`~spectral_edit.util.atomic.
TEST_HOLD_ENV`): a write to a target matching the glob ``hold`` prints
``sea-test: holding <name>`` and sleeps with its temporary complete on disk, just before
it would be committed, so the signal lands mid-save.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from spectral_edit.util.atomic import HOLD_SECONDS_ENV, TEST_HOLD_ENV

HOLDING = "sea-test: holding"


@dataclass
class Finished:
    """A finished ``sea`` process: its exit status and everything it printed."""

    returncode: int
    output: str


def _env(hold: str | None, hold_seconds: float = 60) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SEA_OFFLINE": "1", "COLUMNS": "200"}
    env.pop(TEST_HOLD_ENV, None)
    if hold is not None:
        env[TEST_HOLD_ENV] = hold
        env[HOLD_SECONDS_ENV] = str(hold_seconds)
    return env


def start(
    args: Sequence[str | os.PathLike[str]], hold: str | None = None, hold_seconds: float = 60
) -> subprocess.Popen:
    """``python -m spectral_edit.cli ARGS`` (stderr into stdout), holding ``hold_seconds``
    at ``hold``. SIGINT is reset to its default in the child: a test run started in the
    background (``nohup``, ``cmd &``) inherits SIGINT ignored, and Python keeps an ignored
    SIGINT ignored, so Ctrl-C could not be tried."""
    return subprocess.Popen(
        [sys.executable, "-m", "spectral_edit.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=_env(hold, hold_seconds),
        text=True,
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for(process: subprocess.Popen, marker: str = HOLDING, timeout: float = 120) -> str:
    """Read the process's output until a line holds ``marker``; returns what was read
    (the rest is read on by :func:`stop`). Fails, killing the process, if it exits or the
    time runs out first."""
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []

    def pump() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            lines.put(line)
            if marker in line:
                return

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if process.poll() is not None and lines.empty():
                break
            continue
        seen.append(line)
        if marker in line:
            return "".join(seen)
    process.kill()
    process.wait()
    raise AssertionError(f"{marker!r} never came:\n{''.join(seen)}")


def stop(process: subprocess.Popen, sig: signal.Signals) -> Finished:
    """Send ``sig`` and wait for the process to end."""
    process.send_signal(sig)
    output, _ = process.communicate(timeout=60)
    return Finished(process.returncode, output or "")


def run(args: Sequence[str | os.PathLike[str]], timeout: float = 300) -> Finished:
    """Run ``sea ARGS`` to its end (no hold)."""
    done = subprocess.run(
        [sys.executable, "-m", "spectral_edit.cli", *map(str, args)],
        capture_output=True,
        env=_env(None),
        text=True,
        timeout=timeout,
    )
    return Finished(done.returncode, done.stdout + done.stderr)
