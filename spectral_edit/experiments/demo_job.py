"""``sea demo``, the README's main job: HaluEval demonstrations → SEA editor → TruthfulQA
MC1/MC2/MC3 before and after, as resumable stages in the one store
(:mod:`spectral_edit.experiments.store`).

Output folder: ``demos.jsonl``; ``fit.json`` with ``editor.safetensors``;
``eval_unedited.json`` / ``eval_edited.json`` with ``truthfulqa_unedited.jsonl`` /
``truthfulqa_edited.jsonl`` (per question); ``report.json`` and ``report.md``. A rerun
with the same options reuses every stage; a changed fit option refits and re-scores the
edited model only. Every stage is keyed by content (:func:`~.store.model_key`: the
model's weights, not its name or folder; the demonstrations; the questions read), so a
model folder with new weights or another ``data_dir`` recomputes what they change. The
run holds the folder (:meth:`~.store.Store.exclusive`): a second run into it is refused.
No file written records a local path (the model appears by its shareable name).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

from ..core.options import SeaOptions, check_count, check_limit
from ..data.errors import DataFileMissing
from ..data.halueval import load_halueval_qa
from ..data.locate import resolve
from ..data.splits import truthfulqa_questions
from ..demos.builders import PAPER_SEED, halueval_demos
from ..demos.format import Demonstration, read_demos, write_demos
from ..demos.prompts import PLAIN, PromptFormat, chat_format
from ..editors.sea import SpectralEditor
from ..evaluate.truthfulqa import evaluate_truthfulqa
from ..hf.layers import capture_layers, find_decoder_layers
from ..util.identity import shareable_name
from ..util.report import write_jsonl
from .demo_report import DemoEvaluation, DemoReport
from .store import Store, content_key, model_key

SHIPPED_DEMOS = "truthful_demos.jsonl"

Echo = Callable[[str], None]


def shipped_demos_path() -> Path:
    """Path of the project's hand-written truthfulness demonstrations (30 pairs)."""
    return Path(str(resources.files("spectral_edit.resources") / SHIPPED_DEMOS))


class TruthfulnessDemos(NamedTuple):
    """Demonstrations and a description of where they came from."""

    demos: list[Demonstration]
    source: str


def load_truthfulness_demos(
    n_demos: int,
    data_dir: str | Path | None,
    seed: int = PAPER_SEED,
    echo: Echo = print,
    *,
    fallback: bool = True,
    prompt_format: PromptFormat = PLAIN,
) -> TruthfulnessDemos:
    """``n_demos`` HaluEval demonstrations (the one-turn file, then the multi-turn file's
    items for N > 500), each file shuffled with ``seed``.

    Where HaluEval is not available: with ``fallback``, the shipped hand-written file
    (``echo`` says so); without, the :class:`DataFileMissing` error (also for a missing
    multi-turn file when it is needed). ``n_demos`` must be ``>= 1`` (``ValueError``).
    HaluEval demonstrations are built in ``prompt_format``; the shipped ones are plain
    (a capture adopts their prompts into a chat template).
    """
    check_count("n_demos", n_demos)
    try:
        one = load_halueval_qa(resolve("halueval/qa_one-turn_data.json", data_dir))
    except DataFileMissing as error:
        if not fallback:
            raise
        first_line = str(error).splitlines()[0]
        echo(
            f"HaluEval not available ({first_line}); using the shipped "
            f"hand-written demonstrations instead."
        )
        demos = read_demos(shipped_demos_path())[:n_demos]
        return TruthfulnessDemos(demos, f"shipped hand-written file ({len(demos)} pairs)")
    demos = halueval_demos(one, limit=n_demos, seed=seed, prompt_format=prompt_format)
    source = f"HaluEval QA one-turn ({len(demos)} of {len(one)} items, seed {seed})"
    if n_demos > len(one):
        try:
            multi = load_halueval_qa(resolve("halueval/qa_multi-turn_data.json", data_dir))
        except DataFileMissing:
            if not fallback:
                raise
            multi = []
        extra = halueval_demos(
            multi, limit=n_demos - len(demos), seed=seed, prompt_format=prompt_format
        )
        demos += extra
        source += f" + multi-turn ({len(extra)} items; same questions, other hallucinations)"
    return TruthfulnessDemos(demos, source)


def truthfulness_demo(
    model_name: str,
    options: SeaOptions = SeaOptions(),  # noqa: B008 - frozen, so one shared default is safe
    *,
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    n_demos: int = 100,
    limit: int | None = None,
    mc_file: str = "mc_task_v0.json",
    seed: int = 44,
    batch_size: int = 8,
    dtype: str | None = None,
    device_map: str | dict | None = None,
    echo: Echo = print,
    chat_template: bool = False,
    system_prompt: str | None = None,
    offload_folder: str | Path | None = None,
) -> DemoReport:
    """The main job; results go to ``out_dir`` (report.md, report.json, per-question files).

    ``chat_template``: build the demonstrations, fit and evaluate through the model's chat
    template (with ``system_prompt``), recorded in the editor and in every stage's key.

    ``dtype``, ``device_map``, ``offload_folder``: how the model loads
    (:func:`~spectral_edit.hf.models.load_model`; a ``device_map`` dispatches it with
    accelerate, ``"disk"`` entries needing ``offload_folder``).

    ``options``: the SEA fit. Stages (each resumable): demonstrations, editor fit,
    unedited and edited evaluation. ``echo`` gets the progress messages; the returned
    report has the tables to show (:meth:`DemoReport.tables`).

    Raises:
        FolderInUse: another run holds ``out_dir``.
        OutputError: ``out_dir`` cannot be written.
        ValueError: ``n_demos``/``batch_size`` below 1 or ``limit`` below 1 (``None`` = all),
            or ``system_prompt`` without ``chat_template``, checked before anything runs;
            a layer spec the model lacks, checked before the fit.
        ChatTemplateError: ``chat_template`` for a tokenizer without one (after loading).
    """
    check_count("n_demos", n_demos)
    check_limit("limit", limit)
    check_count("batch_size", batch_size)
    if system_prompt is not None and not chat_template:
        raise ValueError("system_prompt needs chat_template (a system turn is part of a chat)")
    with Store(Path(out_dir), echo).exclusive("sea demo") as store:
        return _truthfulness_demo(
            store,
            model_name,
            options,
            data_dir,
            n_demos,
            limit,
            mc_file,
            seed,
            batch_size,
            dtype,
            device_map,
            echo,
            chat_template,
            system_prompt,
            offload_folder,
        )


def _truthfulness_demo(
    store: Store,
    model_name: str,
    options: SeaOptions,
    data_dir: str | Path | None,
    n_demos: int,
    limit: int | None,
    mc_file: str,
    seed: int,
    batch_size: int,
    dtype: str | None,
    device_map: str | dict | None,
    echo: Echo,
    chat_template: bool,
    system_prompt: str | None,
    offload_folder: str | Path | None = None,
) -> DemoReport:
    """:func:`truthfulness_demo`'s stages, in the folder ``store`` holds."""
    from ..hf.models import load_model
    from .pipeline import fit_editor

    out = Path(store.folder)
    started = time.perf_counter()
    model, tokenizer = load_model(
        model_name, dtype=dtype, device_map=device_map, offload_folder=offload_folder
    )
    load_seconds = time.perf_counter() - started
    echo(f"model {model_name} loaded in {load_seconds:.1f} s")
    capture_layers(options.layers, len(find_decoder_layers(model, options.layer_path)))
    prompts = chat_format(tokenizer, system_prompt, model_name) if chat_template else PLAIN

    demos, demo_source = load_truthfulness_demos(
        n_demos, data_dir, seed, echo, prompt_format=prompts
    )
    demos_path = write_demos(out / "demos.jsonl", demos)
    echo(f"demonstrations: {demo_source} → {demos_path}")

    model_id = model_key(model, model_name)
    fit_options = {
        "model": model_id,
        "demos": content_key(demos),
        **options.to_json(),
        **prompts.key(),
    }
    editor_file = "editor.safetensors"

    def fit() -> tuple[Callable[[Path], object], dict[str, Any]]:
        t0 = time.perf_counter()
        fitted = fit_editor(
            model,
            tokenizer,
            demos,
            options,
            batch_size=batch_size,
            progress=True,
            metadata={"demonstrations": demo_source},
            prompt_format=prompts,
        )
        record = {"seconds": time.perf_counter() - t0, "path": editor_file}  # in the folder
        return fitted.save, record

    def load(path: Path) -> SpectralEditor:
        return SpectralEditor.load(path, model)

    editor, fit_record = store.artifact("fit", fit_options, editor_file, load, fit)
    label = f"SEA ({options.layers}, r+={options.pos_ratio}, r-={options.neg_ratio})"
    report = DemoReport(
        shareable_name(model_name),
        demo_source,
        len(demos),
        fit_options,
        label,
        fit_record["seconds"],
        fit_record["path"],
        load_seconds,
        dict(editor.metadata),
    )
    try:
        questions = truthfulqa_questions(mc_file, data_dir, limit=limit)
    except DataFileMissing as error:
        echo(f"TruthfulQA is not available, so nothing is evaluated:\n{error}")
        return report

    def evaluate(edited: bool) -> dict[str, Any]:
        label = "edited" if edited else "unedited"
        with editor.apply(model) if edited else contextlib.nullcontext():
            result = evaluate_truthfulqa(
                model,
                tokenizer,
                questions,
                progress=f"TruthfulQA ({label})",
                prompt_format=prompts,
            )
        write_jsonl(out / f"truthfulqa_{label}.jsonl", result.per_question)
        return result.summary

    eval_options = {
        "model": model_id,
        "mc_file": mc_file,
        "limit": limit,
        "questions": content_key(questions),
        **prompts.key(),
    }
    unedited = store.run("eval_unedited", eval_options, lambda: evaluate(False))
    edited_key = {**eval_options, **fit_options}
    edited = store.run("eval_edited", edited_key, lambda: evaluate(True))
    evaluated = dataclasses.replace(report, evaluation=DemoEvaluation(mc_file, unedited, edited))
    evaluated.write(out)
    return evaluated
