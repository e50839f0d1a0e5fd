"""``sea demos ...``: demonstration files from benchmark data (HaluEval, TruthfulQA, BBQ)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from ..data.halueval import HALUEVAL_SOURCES, load_halueval_source
from ..data.splits import bbq_split
from ..data.truthfulqa import load_fold
from ..demos.builders import bbq_demos, halueval_demos, truthfulqa_demos
from ..demos.format import Demonstration, write_demos
from ..demos.prompts import PLAIN, PromptFormat
from ..hf.model_names import DEFAULT_MODEL
from .common import (
    ChatTemplateOpt,
    DataDirOpt,
    LimitOpt,
    SystemPromptOpt,
    check_prompt_options,
    choice_metavar,
    console,
    count_option,
    data_errors,
    failing_on,
    load,
    prompt_format,
)

app = typer.Typer(help="Build demonstration files from benchmark data.", no_args_is_help=True)

DemosOutOpt = Annotated[Path, typer.Option(help="Output JSON Lines file.")]
TemplateModelOpt = Annotated[
    str,
    typer.Option(
        "--model", "-m", help="The model whose chat template --chat-template uses (HF id, ...)."
    ),
]


def _format(chat_template: bool, system_prompt: str | None, model: str) -> PromptFormat:
    """The prompt format of the demonstrations: plain, or ``model``'s chat template (its
    tokenizer is loaded only then)."""
    check_prompt_options(chat_template, system_prompt)
    if not chat_template:
        return PLAIN
    _, tokenizer = load(model, None, None)
    return prompt_format(tokenizer, model, chat_template, system_prompt)


def _write_built(out: Path, build: Callable[[], list[Demonstration]]) -> None:
    """Write what ``build`` returns to ``out``; a data error (missing or malformed file,
    bad request) is exit code 2."""
    with failing_on(*data_errors()):
        records = build()
    write_demos(out, records)
    console.print(f"wrote {len(records)} demonstrations to {out}")


@app.command("halueval")
def demos_halueval(
    out: DemosOutOpt,
    source: Annotated[
        str,
        typer.Option(
            metavar=choice_metavar(HALUEVAL_SOURCES),
            help="one-turn, multi-turn, both (same questions twice), or full (qa_data.json).",
        ),
    ] = "one-turn",
    limit: LimitOpt = None,
    seed: Annotated[int, typer.Option(help="Shuffle seed (paper: 44).")] = 44,
    data_dir: DataDirOpt = None,
    chat_template: ChatTemplateOpt = False,
    system_prompt: SystemPromptOpt = None,
    model: TemplateModelOpt = DEFAULT_MODEL,
) -> None:
    """HaluEval QA → demonstrations (positive = right answer, negative = a hallucination)."""
    fmt = _format(chat_template, system_prompt, model)
    _write_built(
        out,
        lambda: halueval_demos(
            load_halueval_source(source, data_dir), limit=limit, seed=seed, prompt_format=fmt
        ),
    )


@app.command("truthfulqa")
def demos_truthfulqa(
    out: DemosOutOpt,
    fold: Annotated[int, typer.Option(help="SEA fold (1 or 2) to take demonstrations from.")],
    limit: LimitOpt = None,
    seed: Annotated[int, typer.Option(help="Seed for shuffling and negatives.")] = 44,
    data_dir: DataDirOpt = None,
    chat_template: ChatTemplateOpt = False,
    system_prompt: SystemPromptOpt = None,
    model: TemplateModelOpt = DEFAULT_MODEL,
) -> None:
    """A TruthfulQA fold → demonstrations (best answer vs an incorrect answer)."""
    fmt = _format(chat_template, system_prompt, model)
    _write_built(
        out,
        lambda: truthfulqa_demos(
            load_fold(fold, data_dir), limit=limit, seed=seed, prompt_format=fmt
        ),
    )


@app.command("bbq")
def demos_bbq(
    out: DemosOutOpt,
    n: Annotated[int, count_option("Demonstrations (disambiguated items).")] = 1000,
    seed: Annotated[int, typer.Option(help="Split and negative-choice seed.")] = 0,
    data_dir: DataDirOpt = None,
    chat_template: ChatTemplateOpt = False,
    system_prompt: SystemPromptOpt = None,
    model: TemplateModelOpt = DEFAULT_MODEL,
) -> None:
    """BBQ → demonstrations (gold option vs another option), held out by template."""
    fmt = _format(chat_template, system_prompt, model)
    with failing_on(*data_errors()):
        demo_items, held_out = bbq_split(n, seed, data_dir)
    _write_built(out, lambda: bbq_demos(demo_items, seed=seed, prompt_format=fmt))
    console.print(
        f"{len(held_out)} items of other templates stay for `sea eval bbq "
        f"--held-out-from {n} --seed {seed}`"
    )
