"""The ``sea`` typer app: the command groups' modules wired under one command.

Errors: a command refuses bad input itself (``error: ...``, exit code 2, see
:func:`~spectral_edit.cli.common.fail`); so does every command whose output cannot be
written (:class:`~spectral_edit.util.atomic.OutputError`) or whose output folder another
run holds (:class:`~spectral_edit.util.locks.FolderInUse`), caught here once for all.
What escapes a command anyway is caught here by :class:`SeaGroup`: a one-line ``error:``
message naming the exception, exit code 1, and no traceback unless ``--debug`` (or
``SEA_DEBUG=1``) asks for it; Ctrl-C is exit code 130.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from ..util.atomic import OutputError
from ..util.locks import FolderInUse
from . import (
    analysis,
    compare,
    compose,
    demos,
    eval_generation,  # noqa: F401  (registers `sea eval truthfulqa-gen` on the eval app)
    eval_harm,  # noqa: F401  (registers `sea eval harm` on the eval app)
    evaluate,
    export,
    fit,
    generate,
    joint,
    lm_eval,
    push,
    sweep,
    tune,
)
from .common import err, fail

DEBUG_ENV = "SEA_DEBUG"
"""Set to 1 for tracebacks, as ``--debug`` does."""

EXIT_UNEXPECTED = 1
EXIT_INTERRUPTED = 130


_PACKAGE = Path(__file__).resolve().parents[1]


def _debugging(params: dict[str, Any]) -> bool:
    return bool(params.get("debug")) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """The library's own warnings as ``warning: message`` on stderr (no source line);
    other libraries' warnings as Python shows them."""
    if Path(filename).resolve().is_relative_to(_PACKAGE):
        err.print(f"[yellow]warning:[/yellow] {escape(str(message))}", highlight=False)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


class SeaGroup(TyperGroup):
    """The top-level group: every command runs inside :meth:`invoke`, which turns an
    unexpected exception into a short message and an exit code (the traceback only under
    ``--debug``). Exits, usage errors and aborts pass through unchanged."""

    def invoke(self, ctx: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return super().invoke(ctx)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except (OutputError, FolderInUse) as error:
            raise fail(str(error)) from None
        except KeyboardInterrupt:
            if _debugging(ctx.params):
                raise
            err.print("[red]interrupted[/red]: finished outputs are kept; rerun to resume")
            raise typer.Exit(code=EXIT_INTERRUPTED) from None
        except Exception as error:
            if _debugging(ctx.params) or _is_click_error(error):
                raise
            err.print(
                f"[red]error:[/red] {type(error).__name__}: {escape(str(error))}\n"
                f"(unexpected: this is a bug or an unchecked input; rerun with --debug for "
                f"the traceback and report it)",
                markup=True,
                highlight=False,
            )
            raise typer.Exit(code=EXIT_UNEXPECTED) from None


def _is_click_error(error: Exception) -> bool:
    """Usage errors and the like, which click prints itself."""
    return any(cls.__name__ in {"ClickException", "UsageError"} for cls in type(error).__mro__)


app = typer.Typer(
    cls=SeaGroup,
    help="Spectral Editing of Activations (SEA): fit, apply and evaluate activation edits.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help=f"Show tracebacks (also {DEBUG_ENV}=1).")
    ] = False,
) -> None:
    """Spectral Editing of Activations (SEA): fit, apply and evaluate activation edits."""


app.add_typer(demos.app, name="demos")
app.add_typer(evaluate.app, name="eval")
app.command()(fit.fit)
app.command()(generate.generate)
app.command()(fit.info)
app.command()(compare.compare)
app.command()(compare.demo)
app.command()(tune.tune)
app.command()(sweep.sweep)
app.command("joint-study")(joint.joint_study)
app.command()(analysis.capture)
app.command()(analysis.inspect)
app.command()(push.push)
app.command()(export.export)
app.command()(compose.compose)
app.command("lm-eval", context_settings=lm_eval.CONTEXT_SETTINGS)(lm_eval.lm_eval)
