"""The CLI's safety net: an exception no command checked for is one line and exit 1, the
traceback only with --debug / SEA_DEBUG=1; Ctrl-C is exit 130 without a traceback."""

from __future__ import annotations

import pytest
import typer
import typer.testing

from spectral_edit.cli import app as app_module
from tests.failures.refusals import assert_refused, run_cli

FIT = ["fit", "--demos", "demos.jsonl", "--out", "editor.safetensors"]
"""Arguments that parse; the command body is replaced."""


@pytest.fixture()
def broken_command(monkeypatch):
    """A `sea fit` whose body raises the exception the test puts in ``raised``."""
    raised: list[BaseException] = []

    def boom(*args, **kwargs):
        raise raised[0]

    group = typer.main.get_command(app_module.app)
    monkeypatch.setattr(group.commands["fit"], "callback", boom)
    monkeypatch.setattr(typer.testing, "_get_command", lambda _app: group)
    return raised


def test_unexpected_error_is_one_line_without_traceback(broken_command):
    broken_command.append(RuntimeError("disk on fire"))
    output = assert_refused(run_cli(FIT), "RuntimeError: disk on fire", "--debug", code=1)
    assert "Traceback" not in output


@pytest.mark.parametrize("switch", [["--debug"], []])
def test_debug_shows_the_error(broken_command, switch):
    broken_command.append(RuntimeError("disk on fire"))
    env = {} if switch else {app_module.DEBUG_ENV: "1"}
    result = run_cli([*switch, *FIT], **env)
    assert result.exit_code != 0
    assert isinstance(result.exception, RuntimeError)


def test_interrupt_is_exit_130(broken_command):
    broken_command.append(KeyboardInterrupt())
    assert_refused(run_cli(FIT), "interrupted", "rerun", code=130)


def test_unknown_option_is_a_usage_error():
    result = run_cli(["fit", "--no-such-option"])
    assert result.exit_code == 2
    assert "No such option" in result.output and "Traceback" not in result.output


def test_library_warnings_are_one_line(monkeypatch):
    """A warning raised inside the library is shown as ``warning: message`` on the CLI
    (no source path, no code line); the command still succeeds."""
    import warnings

    import spectral_edit.editors.registry as somewhere_in_the_library

    group = typer.main.get_command(app_module.app)

    def warns(*args, **kwargs):
        warnings.warn_explicit(
            "3 duplicate demonstrations", UserWarning, somewhere_in_the_library.__file__, 1
        )

    monkeypatch.setattr(group.commands["fit"], "callback", warns)
    monkeypatch.setattr(typer.testing, "_get_command", lambda _app: group)
    result = run_cli(FIT)
    assert result.exit_code == 0, result.output
    assert "warning: 3 duplicate demonstrations" in result.output
    assert somewhere_in_the_library.__file__ not in result.output
