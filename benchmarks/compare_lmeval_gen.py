#!/usr/bin/env python
"""Our TruthfulQA generation evaluator against lm-evaluation-harness's ``truthfulqa_gen``.

Runs, on the first N questions of the local ``TruthfulQA.csv`` and the unedited model:

1. lm-eval itself (in the separate lm-eval virtualenv, benchmarks/setup_lmeval_env.sh):
   the local-file replica ``benchmarks/lmeval_tasks/sea_truthfulqa_gen.yaml`` with lm-eval's
   ``hf`` model on the converted model folder (float32, CPU), its own prompt, generation
   (greedy, until ``"\\n\\n"``, 256 tokens) and scoring (``process_results_gen``);
2. ours: ``spectral_edit.evaluate.truthfulqa_gen.evaluate_truthfulqa_gen`` with
   ``max_new_tokens=256`` (lm-eval's cap);

and compares question by question: the prompts, the reference lists, whether the answers
are identical, the twelve metrics where they are, and -- independent of generation -- our
metric code on lm-eval's own completions against lm-eval's values. Writes the comparison
JSON (``--result``, default ``benchmarks/results/lmeval_gen_cpu_first{N}.json``) and, in
``--output-dir``, lm-eval's per-question records and ours.

    python benchmarks/compare_lmeval_gen.py --limit 10

The lm-eval half is this same file run by the lm-eval venv's Python (``--role lmeval``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TASK_FILE = HERE / "lmeval_tasks" / "sea_truthfulqa_gen.yaml"
TASK_NAME = "sea_truthfulqa_gen"
CSV_RELPATH = Path("truthfulqa") / "TruthfulQA.csv"
DEFAULT_DATA_DIR = "/work/shared/data"
DEFAULT_LMEVAL_VENV = "/work/venv-lmeval"
METRICS = tuple(
    f"{name}_{kind}"
    for name in ("bleu", "rouge1", "rouge2", "rougeL")
    for kind in ("max", "acc", "diff")
)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--role", choices=("compare", "lmeval"), default="compare")
    p.add_argument("--limit", type=int, default=10, help="first N questions")
    p.add_argument("--model", default="gemma-3-270m", help="built-in name (ours)")
    p.add_argument("--model-dir", type=Path, default=None, help="HF folder for lm-eval")
    p.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("SEA_DATA_DIR", DEFAULT_DATA_DIR))
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--output-dir", type=Path, default=Path("runs/lmeval-gen"))
    p.add_argument("--result", type=Path, default=None)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.limit <= 0:
        p.error("--limit must be positive")
    return args


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=float) + "\n")
    os.replace(tmp, path)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False, default=float) + "\n" for r in rows))
    os.replace(tmp, path)


# --------------------------------------------------------------------------- lm-eval side


def run_lmeval(args: argparse.Namespace) -> int:
    """lm-eval's truthfulqa_gen replica on the first ``limit`` questions; writes
    ``lmeval_per_question.jsonl`` and ``lmeval_summary.json`` into ``--output-dir``."""
    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks._yaml_loader import load_yaml

    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_yaml(TASK_FILE, resolve_func=True)
    config["dataset_kwargs"] = {
        **config["dataset_kwargs"],
        "data_files": {config["validation_split"]: str(args.data_dir / CSV_RELPATH)},
    }
    t0 = time.perf_counter()
    lm = HFLM(
        pretrained=str(args.model_dir), dtype="float32", device="cpu", batch_size=args.batch_size
    )
    t_load = time.perf_counter() - t0
    t1 = time.perf_counter()
    results = lm_eval.simple_evaluate(
        model=lm, tasks=[config], limit=args.limit, log_samples=True, bootstrap_iters=0
    )
    t_eval = time.perf_counter() - t1
    assert results is not None
    rows = []
    for sample in sorted(results["samples"][TASK_NAME], key=lambda s: int(s["doc_id"])):
        doc = sample["doc"]
        context, gen_kwargs = sample["arguments"][0][:2]
        rows.append(
            {
                "doc_id": int(sample["doc_id"]),
                "question": doc["question"],
                "correct_answers": list(doc["correct_answers"]),
                "incorrect_answers": list(doc["incorrect_answers"]),
                "context": context,
                "gen_kwargs": gen_kwargs,
                "completion": sample["filtered_resps"][0],
                **{k: float(sample[k]) for k in METRICS},
            }
        )
    res = results["results"][TASK_NAME]
    summary = {
        "n": len(rows),
        "versions": {"lm_eval": lm_eval.__version__, "torch": torch.__version__},
        "torch_threads": torch.get_num_threads(),
        "wall_time_s": {"model_load": t_load, "evaluate": t_eval},
        "metrics": {k: float(res[f"{k},none"]) for k in METRICS},
    }
    _write_jsonl(args.output_dir / "lmeval_per_question.jsonl", rows)
    _write_json(args.output_dir / "lmeval_summary.json", summary)
    print(f"[lmeval] {len(rows)} questions, evaluate {t_eval:.1f}s")
    return 0


# --------------------------------------------------------------------------- our side


def _lmeval_python() -> Path:
    python = Path(os.environ.get("LMEVAL_VENV", DEFAULT_LMEVAL_VENV)) / "bin" / "python"
    if not python.is_file():
        sys.exit(f"error: {python} not found; create it with: bash benchmarks/setup_lmeval_env.sh")
    return python


def _max_abs(pairs: list[tuple[float, float]]) -> float | None:
    return max((abs(a - b) for a, b in pairs), default=None)


def compare(args: argparse.Namespace) -> int:
    """Run lm-eval (subprocess), then ours; write and print the comparison."""
    from spectral_edit.data.splits import truthfulqa_rows
    from spectral_edit.evaluate.metrics.truthfulqa_gen import gen_scores, reference_answers
    from spectral_edit.evaluate.truthfulqa_gen import evaluate_truthfulqa_gen, truthfulqa_gen_prompt
    from spectral_edit.hf.gguf_cache import converted_model_dir
    from spectral_edit.hf.models import load_model

    model, tokenizer = load_model(args.model)  # converts the built-in model once if needed
    model_dir = args.model_dir or converted_model_dir(args.model)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    command = [str(_lmeval_python()), str(Path(__file__).resolve()), "--role", "lmeval"]
    command += ["--limit", str(args.limit), "--model-dir", str(model_dir)]
    command += ["--data-dir", str(args.data_dir), "--batch-size", str(args.batch_size)]
    command += ["--output-dir", str(args.output_dir)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    lmeval_wall = time.perf_counter() - started
    reference = [json.loads(x) for x in (args.output_dir / "lmeval_per_question.jsonl").open()]
    lm_summary = json.loads((args.output_dir / "lmeval_summary.json").read_text())

    rows = truthfulqa_rows(args.data_dir, limit=args.limit)
    started = time.perf_counter()
    ours = evaluate_truthfulqa_gen(
        model, tokenizer, rows, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size
    )
    ours_seconds = time.perf_counter() - started
    ours.write(args.output_dir / "ours")

    if len(reference) != len(rows):
        raise RuntimeError(f"lm-eval scored {len(reference)} questions, we {len(rows)}")
    prompt_mismatch, ref_mismatch, differing = [], [], []
    same_answer_pairs: dict[str, list[tuple[float, float]]] = {k: [] for k in METRICS}
    rescored_pairs: dict[str, list[tuple[float, float]]] = {k: [] for k in METRICS}
    for row, mine, ref in zip(rows, ours.per_question, reference, strict=True):
        if row.question != ref["question"]:
            raise RuntimeError(f"question order differs: {row.question!r} vs {ref['question']!r}")
        if truthfulqa_gen_prompt(row.question) != ref["context"]:
            prompt_mismatch.append(ref["doc_id"])
        true_refs, false_refs = reference_answers(row.correct_answers, row.incorrect_answers)
        if (list(true_refs), list(false_refs)) != (
            ref["correct_answers"],
            ref["incorrect_answers"],
        ):
            ref_mismatch.append(ref["doc_id"])
        rescored = gen_scores(ref["completion"], ref["correct_answers"], ref["incorrect_answers"])
        for k in METRICS:
            rescored_pairs[k].append((rescored[k], ref[k]))
        if mine["completion"] == ref["completion"]:
            for k in METRICS:
                same_answer_pairs[k].append((mine[k], ref[k]))
        else:
            differing.append(
                {"doc_id": ref["doc_id"], "ours": mine["completion"], "lmeval": ref["completion"]}
            )
    n = len(rows)
    lm_means = {
        k: (100.0 if k.endswith("_acc") else 1.0) * sum(r[k] for r in reference) / n
        for k in METRICS
    }
    result = {
        "n_questions": n,
        "model": args.model,
        "model_dir": str(model_dir),
        "data": str(args.data_dir / CSV_RELPATH),
        "batch_size": args.batch_size,
        "max_new_tokens": {"ours": args.max_new_tokens, "lmeval": 256},
        "lmeval_gen_kwargs": reference[0]["gen_kwargs"],
        "versions": lm_summary["versions"],
        "prompts_identical": n - len(prompt_mismatch),
        "references_identical": n - len(ref_mismatch),
        "answers_identical": n - len(differing),
        "differing_answers": differing,
        "max_abs_metric_diff_on_identical_answers": {
            k: _max_abs(v) for k, v in same_answer_pairs.items()
        },
        "max_abs_metric_diff_rescoring_lmeval_completions": {
            k: _max_abs(v) for k, v in rescored_pairs.items()
        },
        "lmeval": {
            **lm_means,
            "evaluate_seconds": lm_summary["wall_time_s"]["evaluate"],
            "wall_seconds_with_startup": lmeval_wall,
        },
        "ours": {
            **{k: ours.summary[k] for k in (*METRICS, "info")},
            "seconds": ours_seconds,
        },
        "note": "acc in percent for both (lm-eval reports a 0-1 fraction; here x100)",
    }
    result_path = args.result or HERE / "results" / f"lmeval_gen_cpu_first{n}.json"
    _write_json(result_path, result)
    print(json.dumps({k: v for k, v in result.items() if k != "differing_answers"}, indent=2))
    print(f"-> {result_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    return run_lmeval(args) if args.role == "lmeval" else compare(args)


if __name__ == "__main__":
    raise SystemExit(main())
