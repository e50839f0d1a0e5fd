#!/usr/bin/env python
"""lm-eval's TruthfulQA MC under an editor against ``sea eval truthfulqa``, same questions.

On one loaded model (load time excluded from both), times

- lm-evaluation-harness's TruthfulQA MC1 + MC2 (the local-file replicas of its
  ``truthfulqa_mc1`` / ``truthfulqa_mc2`` in benchmarks/lmeval_tasks/, on
  ``$SEA_DATA_DIR/truthfulqa/mc_task_v0.json``) with the ``spectral-edit`` lm-eval model
  (:class:`~spectral_edit.integrations.lm_eval.SpectralEditLM`) under the editor, and
- our scorer as ``sea eval truthfulqa`` runs it
  (:func:`~spectral_edit.evaluate.truthfulqa.evaluate_truthfulqa` under
  ``editor.apply(model)``),

on the first ``--limit`` questions of the file (lm-eval's ``limit`` takes the same
ones), and writes to ``--output`` (JSON): both wall times and their ratio (lm-eval's is
the time of its ``loglikelihood`` requests; with its task and dataset building is given
beside it), MC1/MC2 of
both, and the largest per-answer log-likelihood difference (they must agree: same
tokenisation rule, same edit). Model and editor are recorded by shareable identity (name
and sha256), never by local path.

Needs the ``lmeval`` extra. Example (the embedded model, 100 questions)::

    python benchmarks/lmeval_editor_timing.py --editor runs/demo/editor.safetensors \\
        --limit 100 --output runs/lmeval-editor-timing.json
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from spectral_edit.data import resolve
from spectral_edit.data.splits import truthfulqa_questions
from spectral_edit.editors.registry import load_editor
from spectral_edit.evaluate.truthfulqa import evaluate_truthfulqa
from spectral_edit.hf.model_names import DEFAULT_MODEL
from spectral_edit.hf.models import load_model
from spectral_edit.util.identity import path_identity, shareable_name
from spectral_edit.util.report import write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_lmeval_truthfulqa as reference  # noqa: E402  (task configs, per-question rows)

MC_FILE = "mc_task_v0.json"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--editor", type=Path, required=True, help="editor .safetensors file")
    p.add_argument("--alpha", type=float, default=None, help="override the editor's strength")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model (default {DEFAULT_MODEL})")
    p.add_argument("--limit", type=int, default=None, help="first N questions (default all)")
    p.add_argument("--batch-size", type=int, default=16, help="both evaluators' batch size")
    p.add_argument("--data-dir", default=None, help="benchmark data (default $SEA_DATA_DIR)")
    p.add_argument("--output", type=Path, default=Path("runs/lmeval-editor-timing.json"))
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be a whole number >= 1")
    if args.batch_size < 1:
        p.error("--batch-size must be a whole number >= 1")
    return args


def _identity(name: str) -> dict[str, str] | str:
    """A model argument as it may be shared: a local file or folder by name and sha256,
    anything else (built-in name, Hub id) as given."""
    return path_identity(name) if os.path.exists(name) else shareable_name(name)


def _time_ours(model, tokenizer, editor, questions, batch_size: int) -> tuple[Any, float]:
    """``sea eval truthfulqa``'s evaluation under the editor, and its wall time."""
    start = time.perf_counter()
    with editor.apply(model):
        result = evaluate_truthfulqa(model, tokenizer, questions, batch_size=batch_size)
    return result, time.perf_counter() - start


def _time_lmeval(lm, data_file: Path, limit: int | None) -> tuple[list[dict], dict[str, float]]:
    """lm-eval's MC1 + MC2 under the editor: per-question rows, and the wall times of the
    whole ``simple_evaluate`` (task building included) and of its ``loglikelihood`` calls
    (lm-eval's tokenisation, batching and forward passes under the editor)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    configs = reference._load_task_configs(["mc1", "mc2"], data_file)
    names = {key: config["task"] for key, config in zip(["mc1", "mc2"], configs, strict=True)}
    requests_seconds = 0.0
    loglikelihood = lm.loglikelihood

    def timed(*args: Any, **kwargs: Any) -> Any:
        nonlocal requests_seconds
        start = time.perf_counter()
        try:
            return loglikelihood(*args, **kwargs)
        finally:
            requests_seconds += time.perf_counter() - start

    lm.loglikelihood = timed  # the evaluator calls getattr(lm, "loglikelihood")
    start = time.perf_counter()
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=configs,
        limit=limit,
        log_samples=True,
        bootstrap_iters=0,
        task_manager=TaskManager(include_defaults=False),
    )
    seconds = {"total": time.perf_counter() - start, "requests": requests_seconds}
    return reference._per_question_rows(results["samples"], names), seconds


def _agreement(ours: list[dict], theirs: list[dict]) -> dict[str, float]:
    """Largest per-answer log-likelihood and per-question MC2 differences; MC1
    disagreements. The questions must be the same, in the same order."""
    worst_ll = worst_mc2 = 0.0
    mc1_disagree = 0
    for mine, row in zip(ours, theirs, strict=True):
        if mine["question"] != row["question"]:
            raise RuntimeError(f"different questions: {mine['question']!r} / {row['question']!r}")
        for key in ("mc1", "mc2"):
            pairs = zip(mine[f"{key}_logprobs"], row[key]["loglikelihoods"], strict=True)
            worst_ll = max(worst_ll, *(abs(a - b) for a, b in pairs))
        mc1_disagree += int(mine["mc1"] != row["mc1"]["value"])
        worst_mc2 = max(worst_mc2, abs(mine["mc2"] - row["mc2"]["value"]))
    return {
        "max_abs_loglikelihood_diff": worst_ll,
        "max_abs_mc2_diff": worst_mc2,
        "mc1_disagreements": mc1_disagree,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    from spectral_edit.integrations.lm_eval import SpectralEditLM

    if args.threads:
        torch.set_num_threads(args.threads)
    questions = truthfulqa_questions(MC_FILE, args.data_dir, limit=args.limit)
    data_file = resolve(f"truthfulqa/{MC_FILE}", args.data_dir)
    model, tokenizer = load_model(args.model)
    editor = load_editor(args.editor, model)
    if args.alpha is not None:
        editor = editor.with_options(alpha=args.alpha)
    lm = SpectralEditLM(model, editor, tokenizer=tokenizer, batch_size=args.batch_size)

    ours, ours_seconds = _time_ours(model, tokenizer, editor, questions, args.batch_size)
    rows, lmeval_seconds = _time_lmeval(lm, data_file, args.limit)
    lmeval_requests = lmeval_seconds["requests"]
    n = len(rows)
    import lm_eval

    report = {
        "model": _identity(args.model),
        "editor": path_identity(args.editor),
        "editor_kind": type(editor).FORMAT.name,
        "alpha": editor.alpha,
        "n_questions": n,
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "device": str(next(model.parameters()).device),
        "versions": {
            "lm_eval": lm_eval.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "sea_eval_truthfulqa": {
            "seconds": ours_seconds,
            "mc1": ours.summary["mc1"],
            "mc2": ours.summary["mc2"],
        },
        "lm_eval_truthfulqa_mc1_mc2": {
            "seconds": lmeval_requests,
            "seconds_with_task_building": lmeval_seconds["total"],
            "mc1": 100 * sum(r["mc1"]["value"] for r in rows) / n,
            "mc2": 100 * sum(r["mc2"]["value"] for r in rows) / n,
        },
        "lm_eval_over_sea_time": lmeval_requests / ours_seconds,
        **_agreement(ours.per_question, rows),
        "order": "sea eval first, then lm-eval, on the same loaded model",
    }
    write_json(args.output, report)
    print(
        f"[lmeval-editor-timing] {n} questions: lm-eval {lmeval_requests:.1f}s "
        f"({lmeval_seconds['total']:.1f}s with task building), "
        f"sea eval {ours_seconds:.1f}s (x{report['lm_eval_over_sea_time']:.2f}); "
        f"max |Δll| {report['max_abs_loglikelihood_diff']:.2e} -> {args.output}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
