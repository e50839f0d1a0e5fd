"""What every case of the failure catalogue asserts, shared by its test files.

A refused CLI run exits non-zero, prints a message holding the given fragments (the file,
line or option it names and what to do), prints no Python traceback, and raised nothing
but the exit itself. Output safety: no file at the target, no temporary sibling left in
its folder, and an earlier file there unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from click.testing import Result
from typer.testing import CliRunner

from spectral_edit.cli.app import app


def run_cli(args: Sequence[str | os.PathLike[str]], **env: str) -> Result:
    """``sea ARGS`` in-process (stdout and stderr captured together)."""
    return CliRunner().invoke(app, [str(a) for a in args], env=env or None)


def assert_refused(result: Result, *fragments: str, code: int | None = 2) -> str:
    """The run was refused cleanly: exit ``code`` (non-zero; any non-zero code when
    ``None``), each fragment in its output (case-insensitive), no traceback, and no
    exception but the exit. Returns the output."""
    output = result.output
    assert result.exit_code != 0, f"exit 0, expected a refusal:\n{output}"
    if code is not None:
        assert result.exit_code == code, f"exit {result.exit_code}, expected {code}:\n{output}"
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"raised {result.exception!r}:\n{output}"
    )
    assert "Traceback" not in output, output
    flat = " ".join(output.split()).lower()
    for fragment in fragments:
        assert " ".join(fragment.split()).lower() in flat, f"{fragment!r} not in:\n{output}"
    return output


def assert_ok(result: Result) -> str:
    """The run succeeded (exit 0); its output."""
    assert result.exit_code == 0, f"exit {result.exit_code}:\n{result.output}\n{result.exception!r}"
    return result.output


def temporaries(folder: Path) -> list[Path]:
    """The atomic writer's temporaries left in ``folder`` (``.<name>.<hex>.tmp*``)."""
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.name.startswith(".") and ".tmp" in p.name]


def assert_nothing_written(target: Path, before: bytes | None = None) -> None:
    """No partial output: ``target`` absent (or, when ``before`` is given, still holding
    exactly those bytes) and no temporary left beside it."""
    if before is None:
        assert not target.exists(), f"{target} was written"
    else:
        assert target.read_bytes() == before, f"{target} was changed"
    assert temporaries(target.parent) == [], temporaries(target.parent)
