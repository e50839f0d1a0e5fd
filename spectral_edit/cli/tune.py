"""``sea tune``: every method's strength α calibrated under a harm budget (control-task
loss, KL on neutral text) on a tuning part, and reported on held-out data."""

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
)
from .compare import AmateurOpt, JobNeutral
from .tables import print_table

TUNED_METHODS = "sea,phi-sea,mean-diff,pca-vector,iti,leace,lora,icd,cd"


def tune(
    model: ModelOpt = DEFAULT_MODEL,
    demos: Annotated[
        Path | None,
        typer.Option(help="Demonstrations file (default: from --target's data, see --n-demos)."),
    ] = None,
    n_demos: Annotated[
        int,
        count_option(
            "HaluEval (truthfulqa) or BBQ (bbq) demonstrations without --demos.", "--n-demos"
        ),
    ] = 100,
    per_fold: Annotated[
        int | None,
        count_option(
            "Items per part: tuning and held out (default: all).", "--per-fold", or_all=True
        ),
    ] = None,
    methods: Annotated[
        str, typer.Option(help="Comma list of methods (none and dola have no α: skipped).")
    ] = TUNED_METHODS,
    budget_control: Annotated[
        float | None,
        typer.Option(help="Largest control-task loss allowed, in accuracy points."),
    ] = None,
    budget_kl: Annotated[
        float | None, typer.Option(help="Largest mean KL on neutral text allowed, in nats.")
    ] = None,
    evaluations: Annotated[
        int, count_option("Probes per method, split over its configurations.")
    ] = 8,
    alpha_range: Annotated[
        list[str] | None,
        typer.Option(
            "--alpha-range",
            help="'lo,hi' for every method or 'method=lo,hi' (repeatable; default per method).",
        ),
    ] = None,
    target: Annotated[
        Literal["truthfulqa", "bbq"], typer.Option(help="What to maximise.")
    ] = "truthfulqa",
    mc_file: McFileOpt = "mc_task_v0.json",
    control_tasks: Annotated[str, typer.Option(help="Comma list of control tasks.")] = ",".join(
        DEFAULT_CONTROL_TASKS
    ),
    control_limit: Annotated[
        int, count_option("n: control items [0, n) tune, [n, 2n) report.")
    ] = 50,
    kl_texts: Annotated[int, count_option("m: neutral texts [0, m) tune, [m, 2m) report.")] = 32,
    kl_max_tokens: Annotated[int, count_option("Tokens per neutral text.")] = 128,
    neutral: Annotated[
        JobNeutral, typer.Option(help="SEA neutral answers: generate or prompt.")
    ] = Neutral.GENERATE,
    seed: Annotated[int, typer.Option(help="Seed for demonstrations, splits and fitting.")] = 0,
    first_config: Annotated[
        bool,
        typer.Option(help="Only each method's first configuration (all evaluations go to its α)."),
    ] = False,
    out: Annotated[Path, typer.Option(help="Report folder (reruns resume).")] = Path("runs/tune"),
    batch_size: BatchOpt = 16,
    data_dir: DataDirOpt = None,
    dtype: DtypeOpt = None,
    device_map: DeviceMapOpt = None,
    offload_folder: OffloadFolderOpt = None,
    chat_template: ChatTemplateOpt = False,
    system_prompt: SystemPromptOpt = None,
    amateur: AmateurOpt = None,
) -> None:
    """Calibrate each method's α to the largest target within the harm budget on a tuning
    part, report it held out: report.md, report.json and pareto.png."""
    from ..demos.format import DemoFormatError
    from ..experiments.calibrate import Budget
    from ..experiments.methods import parse_methods, without_amateur
    from ..experiments.tune import TUNE_CONFIGS, load_kl_texts, parse_alpha_ranges, run_tune
    from ..experiments.tune_results import TuneOptions
    from ..experiments.tune_targets import load_tune_data

    tasks = control_task_names(control_tasks)
    check_prompt_options(chat_template, system_prompt)
    with failing_on(*data_errors(), DemoFormatError):
        names = parse_methods(methods)
        if amateur is None:
            names, skipped = without_amateur(names, model)
            if skipped:
                err.print(f"[yellow]{skipped}[/yellow]")
        options = TuneOptions(
            methods=tuple(names),
            budget=Budget(control_points=budget_control, kl_nats=budget_kl),
            evaluations=evaluations,
            alpha_ranges=parse_alpha_ranges(alpha_range or []),
            control_tasks=tasks,
            control_limit=control_limit,
            kl_texts=kl_texts,
            kl_max_tokens=kl_max_tokens,
            neutral=neutral,
            batch_size=batch_size,
            seed=seed,
        )
        texts = load_kl_texts(2 * kl_texts, data_dir)
    lm, tokenizer = load(model, dtype, device_map, offload_folder)
    registry = method_registry(names, lm, tokenizer, amateur, dtype, device_map, offload_folder)
    prompts = prompt_format(tokenizer, model, chat_template, system_prompt)
    with failing_on(*data_errors(), DemoFormatError):  # demonstrations built in the format
        data = load_tune_data(
            target,
            n_demos=n_demos,
            per_fold=per_fold,
            demos_file=demos,
            mc_file=mc_file,
            data_dir=data_dir,
            seed=seed,
            echo=console.print,
            prompt_format=prompts,
        )
    with failing_on(ValueError):  # SequenceTooLong is one
        report = run_tune(
            lm,
            tokenizer,
            data.demos,
            data.target,
            options,
            out,
            texts=texts,
            data_dir=data_dir,
            model_name=model,
            demos_source=data.source,
            registry=registry,
            configs={m: c[:1] for m, c in TUNE_CONFIGS.items()} if first_config else TUNE_CONFIGS,
            echo=console.print,
            progress=True,
            prompt_format=prompts,
        )
    print_table(*report.table())
    console.print(f"report in {out}/report.md")
    if report.failed:
        err.print(f"[red]failed methods:[/red] {', '.join(report.failed)} (rerun to retry them)")
        raise typer.Exit(code=1)
