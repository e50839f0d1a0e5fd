"""``sea compare`` (every method under the 2-fold TruthfulQA protocol, with control tasks)
and ``sea demo`` (the main job: HaluEval demonstrations → SEA → TruthfulQA)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from ..core.options import Neutral
from ..data.control import DEFAULT_CONTROL_TASKS
from ..hf.model_names import DEFAULT_MODEL
from .common import (
    BatchOpt,
    ChatTemplateOpt,
    DataDirOpt,
    DeviceMapOpt,
    DtypeOpt,
    LimitOpt,
    McFileOpt,
    ModelOpt,
    OffloadFolderOpt,
    SystemPromptOpt,
    check_prompt_options,
    console,
    control_task_names,
    count_option,
    data_errors,
    err,
    failing_on,
    load,
    method_registry,
    prompt_format,
    sea_options,
    too_long,
)
from .tables import print_table

JobNeutral = Literal[Neutral.GENERATE, Neutral.PROMPT]
"""The neutral answers these jobs take: their demonstrations have no ``neutral`` field."""
AmateurOpt = Annotated[
    str | None,
    typer.Option(
        help="CD's amateur: a Hugging Face causal LM (Hub id or folder) with the model's "
        "tokenizer. Without it cd is skipped (the built-in Gemma 3 270M has no smaller model "
        "with its tokenizer here)."
    ),
]


def compare(
    model: ModelOpt = DEFAULT_MODEL,
    demos: Annotated[
        Path | None,
        typer.Option(help="Demonstrations file (default: HaluEval, see --n-demos)."),
    ] = None,
    n_demos: Annotated[
        int, count_option("HaluEval demonstrations when --demos is not given.", "--n-demos")
    ] = 100,
    methods: Annotated[
        str, typer.Option(help="Comma list of methods.")
    ] = "none,sea,phi-sea,mean-diff,pca-vector,iti,leace,lora,dola,icd,cd",
    per_fold: Annotated[
        int | None,
        count_option("TruthfulQA questions per fold (default: all).", "--per-fold", or_all=True),
    ] = None,
    both_directions: Annotated[
        bool,
        typer.Option(help="Also tune on fold 2 and report on fold 1 (twice the tuning cost)."),
    ] = False,
    mc_file: McFileOpt = "mc_task_v0.json",
    control_tasks: Annotated[str, typer.Option(help="Comma list of control tasks.")] = ",".join(
        DEFAULT_CONTROL_TASKS
    ),
    control_limit: Annotated[
        int | None, count_option("Items per control task ('all': every item).", or_all=True)
    ] = 50,
    neutral: Annotated[
        JobNeutral, typer.Option(help="SEA neutral answers: generate or prompt.")
    ] = Neutral.GENERATE,
    seed: Annotated[int, typer.Option(help="Seed for demonstrations and fitting.")] = 0,
    harm_texts: Annotated[
        int,
        count_option(
            "Neutral texts for the KL harm measure of each chosen setting, beside "
            "free generations (0 = no harm measures).",
            least=0,
        ),
    ] = 16,
    harm_gen_tokens: Annotated[
        int, count_option("New tokens per free generation of the harm measure.")
    ] = 48,
    out: Annotated[Path, typer.Option(help="Report folder (reruns resume).")] = Path(
        "runs/compare"
    ),
    batch_size: BatchOpt = 16,
    data_dir: DataDirOpt = None,
    dtype: DtypeOpt = None,
    device_map: DeviceMapOpt = None,
    offload_folder: OffloadFolderOpt = None,
    chat_template: ChatTemplateOpt = False,
    system_prompt: SystemPromptOpt = None,
    amateur: AmateurOpt = None,
) -> None:
    """Every method on the same demonstrations and questions, tuned on one TruthfulQA fold
    and reported on the other, with control tasks: report.md, report.json and a plot."""
    from ..data.splits import truthfulqa_folds
    from ..demos.format import DemoFormatError, read_demos
    from ..experiments.compare import run_compare
    from ..experiments.compare_results import CompareOptions
    from ..experiments.demo_job import load_truthfulness_demos
    from ..experiments.methods import parse_methods, without_amateur

    tasks = control_task_names(control_tasks)
    check_prompt_options(chat_template, system_prompt)
    with failing_on(*data_errors(), DemoFormatError):
        names = parse_methods(methods)
        if amateur is None:
            names, skipped = without_amateur(names, model)
            if skipped:
                err.print(f"[yellow]{skipped}[/yellow]")
        folds = truthfulqa_folds(mc_file, data_dir, per_fold=per_fold)
        given = read_demos(demos) if demos is not None else None
    with failing_on(ValueError):
        options = CompareOptions(
            methods=tuple(names),
            control_tasks=tasks,
            control_limit=control_limit,
            neutral=neutral,
            batch_size=batch_size,
            seed=seed,
            both_directions=both_directions,
            harm_texts=harm_texts,
            harm_gen_tokens=harm_gen_tokens,
        )
    lm, tokenizer = load(model, dtype, device_map, offload_folder)
    registry = method_registry(names, lm, tokenizer, amateur, dtype, device_map, offload_folder)
    prompts = prompt_format(tokenizer, model, chat_template, system_prompt)
    with failing_on(*data_errors()):  # HaluEval demonstrations are built in the format
        if given is None:
            given = load_truthfulness_demos(
                n_demos, data_dir, seed, console.print, prompt_format=prompts
            ).demos
    with too_long():
        report = run_compare(
            lm,
            tokenizer,
            given,
            folds,
            options,
            out,
            data_dir=data_dir,
            model_name=model,
            registry=registry,
            echo=console.print,
            progress=True,
            prompt_format=prompts,
        )
    print_table(*report.table())
    console.print(f"report in {out}/report.md")
    if report.failed:
        err.print(f"[red]failed methods:[/red] {', '.join(report.failed)} (rerun to retry them)")
        raise typer.Exit(code=1)


def demo(
    model: ModelOpt = DEFAULT_MODEL,
    n_demos: Annotated[int, count_option("HaluEval demonstrations.", "--n-demos")] = 100,
    layers: Annotated[str, typer.Option(help="last-L, all, or a list.")] = "last-8",
    pos_ratio: Annotated[float, typer.Option(help="Energy ratio for k+.")] = 0.995,
    neg_ratio: Annotated[float, typer.Option(help="Energy ratio for k-.")] = 0.995,
    centered: Annotated[
        bool, typer.Option(help="Centre the cross-covariances (measured better on Gemma 3).")
    ] = True,
    neutral: Annotated[JobNeutral, typer.Option(help="generate or prompt.")] = Neutral.GENERATE,
    limit: LimitOpt = None,
    out: Annotated[Path, typer.Option(help="Report folder.")] = Path("runs/demo"),
    batch_size: BatchOpt = 8,
    data_dir: DataDirOpt = None,
    dtype: DtypeOpt = None,
    device_map: DeviceMapOpt = None,
    offload_folder: OffloadFolderOpt = None,
    chat_template: ChatTemplateOpt = False,
    system_prompt: SystemPromptOpt = None,
) -> None:
    """The main job: HaluEval demonstrations → SEA editor → TruthfulQA before and after."""
    from ..demos.prompts import ChatTemplateError
    from ..experiments.demo_job import truthfulness_demo
    from ..hf.model_names import ModelLoadError
    from ..hf.models import parse_device_map

    check_prompt_options(chat_template, system_prompt)
    with failing_on(ValueError):
        parsed_map = parse_device_map(device_map)

    options = sea_options(
        layers=layers, pos_ratio=pos_ratio, neg_ratio=neg_ratio, centered=centered, neutral=neutral
    )
    # the job checks its options (the layer spec against the model) before any capture
    with failing_on(*data_errors(), ModelLoadError, LookupError, ChatTemplateError), too_long():
        report = truthfulness_demo(
            model,
            options,
            out_dir=out,
            data_dir=data_dir,
            n_demos=n_demos,
            limit=limit,
            batch_size=batch_size,
            dtype=dtype,
            device_map=parsed_map,
            echo=console.print,
            chat_template=chat_template,
            system_prompt=system_prompt,
            offload_folder=offload_folder,
        )
    for table in report.tables():
        print_table(*table)
    if report.evaluation is not None:
        console.print(f"report written to {out / 'report.md'}")
