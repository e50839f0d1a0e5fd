"""``sea sweep``: data-efficiency curves (held-out TruthfulQA against the number of
demonstrations, over independent draws), resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..core.options import Neutral
from ..hf.model_names import DEFAULT_MODEL
from .common import (
    BatchOpt,
    ChatTemplateOpt,
    DataDirOpt,
    DeviceMapOpt,
    DtypeOpt,
    McFileOpt,
    ModelOpt,
    OffloadFolderOpt,
    SystemPromptOpt,
    check_prompt_options,
    console,
    count_option,
    data_errors,
    failing_on,
    load,
    prompt_format,
    too_long,
)
from .compare import JobNeutral
from .tables import print_table


def sweep(
    model: ModelOpt = DEFAULT_MODEL,
    demos: Annotated[
        Path | None,
        typer.Option(help="The pool of demonstrations (default: HaluEval, see --n-demos)."),
    ] = None,
    n_demos: Annotated[
        int, count_option("HaluEval demonstrations in the pool when --demos is not given.")
    ] = 1000,
    sizes: Annotated[
        str, typer.Option(help="Demonstration counts N (those above the pool's size are dropped).")
    ] = "5,10,25,50,100,250,500",
    draws: Annotated[int, count_option("Independent draws of the demonstrations.")] = 3,
    methods: Annotated[
        str, typer.Option(help="Comma list of methods fitted from activations (sea, ...).")
    ] = "sea",
    per_fold: Annotated[
        int | None,
        count_option("TruthfulQA questions per fold (default: all).", "--per-fold", or_all=True),
    ] = None,
    both_directions: Annotated[
        bool, typer.Option(help="Also tune on fold 2 and report on fold 1.")
    ] = False,
    mc_file: McFileOpt = "mc_task_v0.json",
    neutral: Annotated[
        JobNeutral, typer.Option(help="SEA neutral answers: generate or prompt.")
    ] = Neutral.GENERATE,
    seed: Annotated[int, typer.Option(help="Seed of the pool (HaluEval) and of the draws.")] = 0,
    out: Annotated[Path, typer.Option(help="Output folder (reruns resume).")] = Path("runs/sweep"),
    batch_size: BatchOpt = 16,
    data_dir: DataDirOpt = None,
    dtype: DtypeOpt = None,
    device_map: DeviceMapOpt = None,
    offload_folder: OffloadFolderOpt = None,
    chat_template: ChatTemplateOpt = False,
    system_prompt: SystemPromptOpt = None,
) -> None:
    """Data efficiency: for each N and draw, every setting tuned on TruthfulQA fold 1 and
    the best scored on fold 2, fitted from prefixes of one capture per draw; sweep.json
    and sweep.png (mean ± std over the draws)."""
    from ..data.splits import truthfulqa_folds
    from ..demos.format import DemoFormatError, read_demos
    from ..experiments.demo_job import load_truthfulness_demos
    from ..experiments.methods import METHODS, parse_methods
    from ..experiments.sweep import SweepOptions, check_methods, parse_sizes, run_sweep

    check_prompt_options(chat_template, system_prompt)
    with failing_on(*data_errors(), DemoFormatError, ValueError):
        names = parse_methods(methods)
        check_methods(names, METHODS)
        options = SweepOptions(
            sizes=parse_sizes(sizes),
            draws=draws,
            methods=tuple(names),
            neutral=neutral,
            batch_size=batch_size,
            seed=seed,
            both_directions=both_directions,
        )
        folds = truthfulqa_folds(mc_file, data_dir, per_fold=per_fold)
        pool = read_demos(demos) if demos is not None else None
    lm, tokenizer = load(model, dtype, device_map, offload_folder)
    prompts = prompt_format(tokenizer, model, chat_template, system_prompt)
    with failing_on(*data_errors()):
        if pool is None:
            pool = load_truthfulness_demos(
                n_demos, data_dir, seed, console.print, prompt_format=prompts
            ).demos
    with failing_on(ValueError), too_long():
        report = run_sweep(
            lm,
            tokenizer,
            pool,
            folds,
            options,
            out,
            model_name=model,
            echo=console.print,
            progress=True,
            prompt_format=prompts,
        )
    rows = [
        [name, row["n"], row["draws"], *(_cell(row[m]) for m in ("mc1", "mc2"))]
        for name, method in report["methods"].items()
        for row in method["curve"]
    ]
    unedited = report["unedited"]
    rows.append(["none", "—", "—", f"{unedited['mc1']:.1f}", f"{unedited['mc2']:.1f}"])
    print_table("held-out TruthfulQA (mean ± std over draws)", _HEADERS, rows)
    console.print(f"curves in {out}/sweep.json and {out}/sweep.png")


_HEADERS = ["method", "N", "draws", "MC1", "MC2"]


def _cell(stats: dict[str, float] | None) -> str:
    """``mean ± std`` (percent), or an em dash."""
    if stats is None:
        return "—"
    std = stats["std"]
    return f"{stats['mean']:.1f}" + ("" if std is None else f" ± {std:.1f}")
