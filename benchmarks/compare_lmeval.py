#!/usr/bin/env python
"""Our TruthfulQA evaluator against lm-evaluation-harness, question by question.

Reads the ``per_question.jsonl`` written by run_lmeval_truthfulqa.py, scores the same
questions (first N of mc_task_v0.json) with ``spectral_edit``, and prints the MC1/MC2 of
both, the largest per-answer log-likelihood difference, and both wall times.

    python benchmarks/compare_lmeval.py runs/lmeval-cpu --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from spectral_edit.data import load_mc_task, resolve
from spectral_edit.evaluate.truthfulqa import evaluate_truthfulqa
from spectral_edit.hf.models import load_model
from spectral_edit.util.report import write_json


def agreement(ours: Sequence[Mapping[str, Any]], reference: Sequence[Mapping[str, Any]]) -> dict:
    """How our per-question TruthfulQA results (``evaluate_truthfulqa(...).per_question``)
    agree with lm-eval's ``per_question.jsonl`` rows on the same questions (same order):
    ``n_questions``, lm-eval's MC1/MC2 (percent), the largest per-answer log-likelihood
    difference, the MC1 disagreements and the largest per-question MC2 difference."""
    worst_ll, mc1_disagree, worst_mc2 = 0.0, 0, 0.0
    for mine, ref in zip(ours, reference, strict=True):
        if mine["question"] != ref["question"]:
            raise ValueError(f"different questions: {mine['question']!r} vs {ref['question']!r}")
        for key in ("mc1", "mc2"):
            lls = ref[key]["loglikelihoods"]
            worst_ll = max(
                worst_ll, *(abs(a - b) for a, b in zip(mine[f"{key}_logprobs"], lls, strict=True))
            )
        mc1_disagree += mine["mc1"] != ref["mc1"]["value"]
        worst_mc2 = max(worst_mc2, abs(mine["mc2"] - ref["mc2"]["value"]))
    n = len(reference)
    return {
        "n_questions": n,
        "lmeval": {
            "mc1": 100 * sum(r["mc1"]["value"] for r in reference) / n,
            "mc2": 100 * sum(r["mc2"]["value"] for r in reference) / n,
        },
        "max_abs_loglikelihood_diff": worst_ll,
        "mc1_disagreements": mc1_disagree,
        "max_abs_mc2_diff": worst_mc2,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lmeval_dir", type=Path)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    reference = [json.loads(x) for x in (args.lmeval_dir / "per_question.jsonl").open()]
    lm_summary = json.loads((args.lmeval_dir / "summary.json").read_text())
    questions = load_mc_task(resolve("truthfulqa/mc_task_v0.json", args.data_dir))
    questions = questions[: len(reference)]
    model, tokenizer = load_model(args.model)
    start = time.perf_counter()
    ours = evaluate_truthfulqa(model, tokenizer, questions, batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    result = {
        **agreement(ours.per_question, reference),
        "ours": {"mc1": ours.summary["mc1"], "mc2": ours.summary["mc2"], "seconds": seconds},
        "speedup": lm_summary["wall_time_s"]["evaluate"] / seconds,
    }
    result["lmeval"]["evaluate_seconds"] = lm_summary["wall_time_s"]["evaluate"]
    write_json(args.lmeval_dir / "comparison.json", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
