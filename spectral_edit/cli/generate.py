"""``sea generate``: greedy continuations of prompts, unedited and edited, side by side."""

from __future__ import annotations

import re
from typing import Annotated

import typer
from rich.table import Table

from ..hf.model_names import DEFAULT_MODEL
from .common import (
    AlphaOpt,
    BatchOpt,
    ChatTemplateOpt,
    DeviceMapOpt,
    DtypeOpt,
    EditorOpt,
    ModelOpt,
    OffloadFolderOpt,
    SystemPromptOpt,
    check_prompt_options,
    console,
    count_option,
    load,
    load_editor,
    prompt_format,
    too_long,
    warn_prompt_format,
)

_SHELL_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}
_SHELL_ESCAPE = re.compile(r"\\([nt\\])")


def decode_shell_escapes(text: str) -> str:
    """``text`` with the escapes a shell user types for a newline, a tab and a backslash
    (``\\n``, ``\\t``, ``\\\\``) decoded; every other character, non-ASCII included, and any
    other backslash stay as they are."""
    return _SHELL_ESCAPE.sub(lambda m: _SHELL_ESCAPES[m.group(1)], text)


def generate(
    prompts: Annotated[list[str], typer.Argument(help="Prompts to continue.")],
    model: ModelOpt = DEFAULT_MODEL,
    editor: EditorOpt = None,
    alpha: AlphaOpt = None,
    max_new_tokens: Annotated[int, count_option("Tokens to generate (at most).")] = 48,
    stop: Annotated[
        list[str] | None, typer.Option(help="Stop strings (default: blank line, next Q:).")
    ] = None,
    batch_size: BatchOpt = 8,
    chat_template: ChatTemplateOpt = False,
    system_prompt: SystemPromptOpt = None,
    dtype: DtypeOpt = None,
    device_map: DeviceMapOpt = None,
    offload_folder: OffloadFolderOpt = None,
) -> None:
    """Greedy continuations, unedited and (with --editor) edited, side by side; with
    --chat-template each prompt is a user turn and the reply is generated."""
    from ..hf.generation import ANSWER_STOPS, generate_greedy

    check_prompt_options(chat_template, system_prompt)
    lm, tokenizer = load(model, dtype, device_map, offload_folder)
    fmt = prompt_format(tokenizer, model, chat_template, system_prompt)
    shown = [decode_shell_escapes(p) for p in prompts]
    prompts = [fmt.prompt(p, p) for p in shown]
    stops = tuple(stop) if stop else ANSWER_STOPS

    def run() -> list[str]:
        with too_long():
            return generate_greedy(
                lm,
                tokenizer,
                prompts,
                max_new_tokens=max_new_tokens,
                stops=stops,
                batch_size=batch_size,
            )

    columns = [run()]
    table = Table(show_lines=True)
    table.add_column("prompt", max_width=40)
    table.add_column("unedited")
    if editor is not None:
        sea = load_editor(editor, lm, alpha)
        warn_prompt_format(editor, sea, fmt)
        with sea.apply(lm):
            columns.append(run())
        table.add_column(f"edited (α={sea.alpha:g})")
    for prompt, *texts in zip(shown, *columns, strict=True):
        table.add_row(prompt[-200:], *texts)
    console.print(table)
