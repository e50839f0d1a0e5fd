"""``sea lm-eval``: any lm-evaluation-harness task under an editor.

Every argument but ``--editor`` (repeated: a composition, in that order) and ``--alpha``
is lm-eval's own (``--tasks``, ``--model_args pretrained=M,...``, ``--include_path``,
``--limit``, ``--output_path``, ...), parsed by lm-eval's command line with the
``spectral-edit`` model (:mod:`spectral_edit.integrations.lm_eval`); ``pretrained``
defaults to the built-in model. The editor file and strength are checked before lm-eval starts.
"""

from __future__ import annotations

from typing import Any

import typer

from .common import AlphaOpt, EditorOpt, editor_label, fail, failing_on, load_editor

CONTEXT_SETTINGS: dict[str, Any] = {"allow_extra_args": True, "ignore_unknown_options": True}
"""The command passes every argument it does not know on to lm-eval."""


def lm_eval(ctx: typer.Context, editor: EditorOpt = None, alpha: AlphaOpt = None) -> None:
    """Run lm-evaluation-harness tasks under an editor; the other arguments are lm-eval's
    (e.g. --tasks truthfulqa_mc2 --model_args pretrained=gemma-3-270m --device cpu; lm-eval's
    own help: sea lm-eval -- --help)."""
    from ..editors.file_format import EditorFileError
    from ..hf.model_names import ModelLoadError
    from ..util.extras import MissingExtraError

    with failing_on(MissingExtraError):
        from ..integrations.lm_eval import (
            UnsupportedEditorError,
            check_editor_positions,
            cli_arguments,
            main,
        )

    if editor is None and alpha is not None:
        raise fail("--alpha needs --editor")
    if editor is not None:
        with failing_on(UnsupportedEditorError):
            check_editor_positions(load_editor(editor, alpha=alpha), str(editor_label(editor)))
    with failing_on(ValueError):
        argv = cli_arguments(ctx.args, editor, alpha)
    with failing_on(EditorFileError, UnsupportedEditorError, ModelLoadError):
        main(argv)
