"""``sea eval ...``: a benchmark on a model, optionally under an editor; the results go to an
output folder (per-record JSON Lines and ``summary.json``) and a table to the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..data.control import DEFAULT_CONTROL_TASKS
from ..hf.model_names import DEFAULT_MODEL
from .common import (
    AlphaOpt,
    BatchOpt,
    ChatTemplateOpt,
    DataDirOpt,
    DeviceMapOpt,
    DtypeOpt,
    EditorOpt,
    LimitOpt,
    McFileOpt,
    ModelOpt,
    OffloadFolderOpt,
    OutFolderOpt,
    SystemPromptOpt,
    check_prompt_options,
    console,
    control_task_names,
    count_option,
    data_errors,
    edited,
    editor_label,
    failing_on,
    load,
    prompt_format,
    too_long,
)
from .tables import print_table

app = typer.Typer(help="Evaluate a model, optionally under an editor.", no_args_is_help=True)


@app.command("truthfulqa")
def eval_truthfulqa(
    model: ModelOpt = DEFAULT_MODEL,
    editor: EditorOpt = None,
    alpha: AlphaOpt = None,
    limit: LimitOpt = None,
    fold: Annotated[int | None, typer.Option(help="Only the questions of SEA fold 1 or 2.")] = None,
    mc_file: McFileOpt = "mc_task_v0.json",
    out: OutFolderOpt = Path("runs/truthfulqa"),
    batch_size: BatchOpt = 16,
    data_dir: DataDirOpt = None,
    chat_template: ChatTemplateOpt = False,
    system_prompt: SystemPromptOpt = None,
    dtype: DtypeOpt = None,
    device_map: DeviceMapOpt = None,
    offload_folder: OffloadFolderOpt = None,
) -> None:
    """TruthfulQA MC1/MC2/MC3 (per-question JSON Lines + summary JSON)."""
    from ..data.splits import truthfulqa_questions
    from ..evaluate.truthfulqa import evaluate_truthfulqa

    check_prompt_options(chat_template, system_prompt)
    with failing_on(*data_errors()):
        questions = truthfulqa_questions(mc_file, data_dir, fold=fold, limit=limit)
    lm, tokenizer = load(model, dtype, device_map, offload_folder)
    prompts = prompt_format(tokenizer, model, chat_template, system_prompt)
    with too_long(), edited(lm, editor, alpha, prompts):
        result = evaluate_truthfulqa(
            lm, tokenizer, questions, batch_size=batch_size, progress=True, prompt_format=prompts
        )
    run = {"model": model, "editor": editor_label(editor), "alpha": alpha}
    result.write(out, {**run, "mc_file": mc_file, "fold": fold})
    s = result.summary
    print_table(
        f"TruthfulQA ({s['n']} questions)",
        ["MC1", "MC2", "MC3", "seconds"],
        [[s["mc1"], s["mc2"], s["mc3"], s["seconds"]]],
    )
    console.print(f"results in {out}/")


@app.command("bbq")
def eval_bbq(
    model: ModelOpt = DEFAULT_MODEL,
    editor: EditorOpt = None,
    alpha: AlphaOpt = None,
    held_out_from: Annotated[
        int,
        count_option(
            "Evaluate only items held out from `sea demos bbq --n N` (0 = all items).", least=0
        ),
    ] = 1000,
    seed: Annotated[int, typer.Option(help="The split seed used for the demonstrations.")] = 0,
    limit: LimitOpt = None,
    out: OutFolderOpt = Path("runs/bbq"),
    batch_size: BatchOpt = 16,
    data_dir: DataDirOpt = None,
    chat_template: ChatTemplateOpt = False,
    system_prompt: SystemPromptOpt = None,
    dtype: DtypeOpt = None,
    device_map: DeviceMapOpt = None,
    offload_folder: OffloadFolderOpt = None,
) -> None:
    """BBQ accuracy, unknown rate, bias score and stereotype rate (ambiguous/disambiguated)."""
    from ..data.splits import bbq_split
    from ..evaluate.bbq import evaluate_bbq

    check_prompt_options(chat_template, system_prompt)
    with failing_on(*data_errors()):
        _, items = bbq_split(held_out_from, seed, data_dir)
    items = items if limit is None else items[:limit]
    lm, tokenizer = load(model, dtype, device_map, offload_folder)
    prompts = prompt_format(tokenizer, model, chat_template, system_prompt)
    with too_long(), edited(lm, editor, alpha, prompts):
        result = evaluate_bbq(
            lm, tokenizer, items, batch_size=batch_size, progress=True, prompt_format=prompts
        )
    result.write(out)
    _print_bbq(result.summary)
    console.print(f"results in {out}/")


def _print_bbq(summary: dict[str, Any]) -> None:
    rows = []
    groups = {"overall": summary["overall"], **summary.get("by_category", {})}
    for name, group in groups.items():
        for condition in ("ambig", "disambig"):
            g = group[condition]
            metrics = ("n", "accuracy", "unknown_rate", "bias_score", "stereotype_rate")
            rows.append([name, condition, *(g[key] for key in metrics)])
    print_table("BBQ", ["category", "context", "n", "A%", "U%", "BS%", "SR%"], rows)


@app.command("crows-pairs")
def eval_crows_pairs(
    file: Annotated[Path, typer.Option(help="crows_pairs_anonymized.csv (upstream format).")],
    model: ModelOpt = DEFAULT_MODEL,
    editor: EditorOpt = None,
    alpha: AlphaOpt = None,
    limit: LimitOpt = None,
    out: OutFolderOpt = Path("runs/crows_pairs"),
    batch_size: BatchOpt = 16,
    dtype: DtypeOpt = None,
    device_map: DeviceMapOpt = None,
    offload_folder: OffloadFolderOpt = None,
) -> None:
    """CrowS-Pairs: % of pairs whose more-stereotypical sentence scores higher."""
    from ..data import DataFormatError, load_crows_pairs
    from ..evaluate.crows_pairs import evaluate_crows_pairs

    with failing_on(DataFormatError, OSError):
        pairs = load_crows_pairs(file)
    pairs = pairs if limit is None else pairs[:limit]
    lm, tokenizer = load(model, dtype, device_map, offload_folder)
    with too_long(), edited(lm, editor, alpha):
        result = evaluate_crows_pairs(lm, tokenizer, pairs, batch_size=batch_size, progress=True)
    result.write(out)
    overall, by_type = result.summary["overall"], result.summary["by_type"]
    rows = [["overall", overall["n"], overall["pct_more"]]]
    rows += [[t, r["n"], r["pct_more"]] for t, r in by_type.items()]
    print_table("CrowS-Pairs", ["bias type", "pairs", "% sent_more preferred"], rows)


@app.command("control")
def eval_control(
    tasks: Annotated[str, typer.Option(help="Comma list of control tasks.")] = ",".join(
        DEFAULT_CONTROL_TASKS
    ),
    model: ModelOpt = DEFAULT_MODEL,
    editor: EditorOpt = None,
    alpha: AlphaOpt = None,
    limit: LimitOpt = None,
    out: OutFolderOpt = Path("runs/control"),
    batch_size: BatchOpt = 16,
    data_dir: DataDirOpt = None,
    chat_template: ChatTemplateOpt = False,
    system_prompt: SystemPromptOpt = None,
    dtype: DtypeOpt = None,
    device_map: DeviceMapOpt = None,
    offload_folder: OffloadFolderOpt = None,
) -> None:
    """Control tasks (log-likelihood multiple choice; gsm8k by greedy generation, skipped
    under --chat-template)."""
    from ..evaluate.control import evaluate_control

    names = control_task_names(tasks, "--tasks")
    check_prompt_options(chat_template, system_prompt)
    lm, tokenizer = load(model, dtype, device_map, offload_folder)
    prompts = prompt_format(tokenizer, model, chat_template, system_prompt)
    with failing_on(*data_errors()), too_long(), edited(lm, editor, alpha, prompts):
        result = evaluate_control(
            lm,
            tokenizer,
            list(names),
            data_dir=data_dir,
            limit=limit,
            batch_size=batch_size,
            progress=True,
            prompt_format=prompts,
        )
    result.write(out)
    rows = [
        [name, s.get("n"), s.get("acc", s.get("strict_match")), s.get("acc_norm")]
        for name, s in result.tasks.items()
    ]
    print_table("control tasks", ["task", "n", "acc / EM", "acc_norm"], rows)
