"""``sea eval truthfulqa-gen``: TruthfulQA generation (judge-free BLEU/ROUGE Truth, and the
informativeness proxy), optionally under an editor; registered on ``sea eval``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
    ModelOpt,
    OffloadFolderOpt,
    OutFolderOpt,
    SystemPromptOpt,
    check_prompt_options,
    console,
    count_option,
    data_errors,
    edited,
    editor_label,
    failing_on,
    load,
    prompt_format,
    too_long,
)
from .evaluate import app
from .tables import print_table


@app.command("truthfulqa-gen")
def eval_truthfulqa_gen(
    model: ModelOpt = DEFAULT_MODEL,
    editor: EditorOpt = None,
    alpha: AlphaOpt = None,
    limit: LimitOpt = None,
    fold: Annotated[int | None, typer.Option(help="Only the questions of SEA fold 1 or 2.")] = None,
    max_new_tokens: Annotated[
        int, count_option("Tokens generated per answer at most (lm-eval: 256).")
    ] = 64,
    out: OutFolderOpt = Path("runs/truthfulqa_gen"),
    batch_size: BatchOpt = 8,
    data_dir: DataDirOpt = None,
    chat_template: ChatTemplateOpt = False,
    system_prompt: SystemPromptOpt = None,
    dtype: DtypeOpt = None,
    device_map: DeviceMapOpt = None,
    offload_folder: OffloadFolderOpt = None,
) -> None:
    """TruthfulQA generation as lm-eval's truthfulqa_gen scores it: BLEU/ROUGE max, acc
    (percent) and diff, plus info (percent informative); per-question JSON Lines + summary."""
    from ..data.splits import truthfulqa_rows
    from ..evaluate.truthfulqa_gen import evaluate_truthfulqa_gen
    from ..util.extras import MissingExtraError

    check_prompt_options(chat_template, system_prompt)
    with failing_on(*data_errors()):
        rows = truthfulqa_rows(data_dir, fold=fold, limit=limit)
    lm, tokenizer = load(model, dtype, device_map, offload_folder)
    prompts = prompt_format(tokenizer, model, chat_template, system_prompt)
    with failing_on(MissingExtraError), too_long(), edited(lm, editor, alpha, prompts):
        result = evaluate_truthfulqa_gen(
            lm,
            tokenizer,
            rows,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            progress=True,
            prompt_format=prompts,
        )
    run = {"model": model, "editor": editor_label(editor), "alpha": alpha}
    result.write(out, {**run, "fold": fold, "task": "truthfulqa_gen"})
    s = result.summary
    print_table(
        f"TruthfulQA generation ({s['n']} questions)",
        ["BLEU acc%", "ROUGE-1 acc%", "ROUGE-L acc%", "BLEU max", "info%", "seconds"],
        [[s["bleu_acc"], s["rouge1_acc"], s["rougeL_acc"], s["bleu_max"], s["info"], s["seconds"]]],
    )
    console.print(f"results in {out}/")
