"""``sea eval harm``: how far an editor moves the next-token distribution on neutral text
(KL) and whether its free generations degrade (repetition, diversity, fluency)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from ..hf.model_names import DEFAULT_MODEL
from .common import (
    AlphaOpt,
    BatchOpt,
    ChatTemplateOpt,
    DataDirOpt,
    DeviceMapOpt,
    DtypeOpt,
    EditorOpt,
    ModelOpt,
    OffloadFolderOpt,
    OutFolderOpt,
    SystemPromptOpt,
    check_prompt_options,
    console,
    count_option,
    data_errors,
    editor_label,
    failing_on,
    load,
    load_editor,
    prompt_format,
    too_long,
    warn_prompt_format,
)
from .evaluate import McFileOpt, app
from .tables import print_table


@app.command("harm")
def eval_harm(
    model: ModelOpt = DEFAULT_MODEL,
    editor: EditorOpt = None,
    alpha: AlphaOpt = None,
    limit: Annotated[
        int | None,
        count_option(
            "Neutral texts (HaluEval general) and TruthfulQA prompts: the first N of each, or "
            "'all' (the open prompts are always all used).",
            or_all=True,
        ),
    ] = 32,
    max_tokens: Annotated[int, count_option("Tokens per neutral text (truncated).")] = 128,
    gen_tokens: Annotated[int, count_option("New tokens per generation (at most).")] = 48,
    mc_file: McFileOpt = "mc_task_v0.json",
    out: OutFolderOpt = Path("runs/harm"),
    batch_size: BatchOpt = 8,
    data_dir: DataDirOpt = None,
    chat_template: ChatTemplateOpt = False,
    system_prompt: SystemPromptOpt = None,
    dtype: DtypeOpt = None,
    device_map: DeviceMapOpt = None,
    offload_folder: OffloadFolderOpt = None,
) -> None:
    """Harm measures: KL(edited || unedited) on neutral text, repeated 4-grams, distinct-2
    and fluency perplexity of free generations, unedited beside edited."""
    from ..evaluate.harm import (
        build_harm_reference,
        default_prompts,
        evaluate_harm,
        neutral_texts,
    )

    check_prompt_options(chat_template, system_prompt)
    with failing_on(*data_errors()):
        texts = neutral_texts(data_dir, limit)
    lm, tokenizer = load(model, dtype, device_map, offload_folder)
    fmt = prompt_format(tokenizer, model, chat_template, system_prompt)
    with failing_on(*data_errors()):
        prompts = default_prompts(data_dir, limit, mc_file=mc_file, prompt_format=fmt)
    sea = None if editor is None else load_editor(editor, lm, alpha)
    if editor is not None:
        warn_prompt_format(editor, sea, fmt)
    with failing_on(ValueError), too_long():
        reference = build_harm_reference(
            lm,
            tokenizer,
            texts=texts,
            prompts=prompts,
            max_tokens=max_tokens,
            gen_tokens=gen_tokens,
            batch_size=batch_size,
            progress=True,
        )
    with too_long():
        result = evaluate_harm(lm, tokenizer, sea, reference, progress=True)
    run = {"model": model, "editor": editor_label(editor), "alpha": alpha}
    result.write(out, {**run, "mc_file": mc_file, "limit": limit})
    s = result.summary
    print_table(
        f"harm ({s['n_texts']} texts, {s['kl_tokens']} tokens; {s['n_prompts']} prompts)",
        ["measure", "unedited", "edited"],
        [
            ["KL mean (nats)", "0", f"{s['kl_mean']:.4g}"],
            ["KL p95 (nats)", "0", f"{s['kl_p95']:.4g}"],
            ["repeat-4 %", s["unedited_repeat4"], s["repeat4"]],
            ["distinct-2 %", s["unedited_distinct2"], s["distinct2"]],
            ["fluency ppl", s["unedited_fluency_ppl"], s["fluency_ppl"]],
            ["changed generations", "", s["changed"]],
        ],
    )
    seconds = ", ".join(
        f"{name} {s[f'{name}_seconds']:.1f}s" for name in ("kl", "generation", "fluency")
    )
    console.print(f"seconds: {seconds}; results in {out}/")
