"""The ``sea`` typer app: the command groups' modules wired under one command."""

from __future__ import annotations

import typer

from . import (
    compare,
    demos,
    eval_generation,  # noqa: F401  (registers `sea eval truthfulqa-gen` on the eval app)
    eval_harm,  # noqa: F401  (registers `sea eval harm` on the eval app)
    evaluate,
    fit,
    generate,
    tune,
)

app = typer.Typer(
    help="Spectral Editing of Activations (SEA): fit, apply and evaluate activation edits.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(demos.app, name="demos")
app.add_typer(evaluate.app, name="eval")
app.command()(fit.fit)
app.command()(generate.generate)
app.command()(fit.info)
app.command()(compare.compare)
app.command()(compare.demo)
app.command()(tune.tune)
