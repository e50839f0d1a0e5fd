#!/usr/bin/env python
"""Reference TruthfulQA MC1/MC2 run with lm-evaluation-harness, for checking our evaluator.

Runs the local-file replicas of lm-eval's ``truthfulqa_mc1`` / ``truthfulqa_mc2``
(benchmarks/lmeval_tasks/) with lm-eval's ``hf`` model on a local Hugging Face folder and
writes, into ``--output-dir``:

- ``summary.json``: MC1/MC2 in percent (+ stderr), wall times, versions, the exact prompt
  of the first question, and how lm-eval tokenised it (BOS or not);
- ``per_question.jsonl``: one line per question (``doc_id`` order) with the question, the
  choices with their labels and summed log-likelihoods (``filtered_resps``), and the
  per-question ``mc1`` (0/1) and ``mc2`` (true probability mass) values;
- ``lmeval_results.json``: lm-eval's own results dict (without samples).

It must run in the separate lm-eval virtualenv (benchmarks/setup_lmeval_env.sh). When
started with another Python it re-executes itself with ``$LMEVAL_VENV/bin/python``
(default /work/venv-lmeval) if that exists.

Example::

    /work/venv-lmeval/bin/python benchmarks/run_lmeval_truthfulqa.py /tmp/gemma270m-hf \\
        --output-dir runs/lmeval-truthfulqa --limit 20 --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

TASKS_DIR = Path(__file__).resolve().parent / "lmeval_tasks"
TASK_FILES = {"mc1": "sea_truthfulqa_mc1.yaml", "mc2": "sea_truthfulqa_mc2.yaml"}
DATA_RELPATH = Path("truthfulqa") / "mc_task_v0.json"
DEFAULT_DATA_DIR = "/work/shared/data"
DEFAULT_LMEVAL_VENV = "/work/venv-lmeval"


# --------------------------------------------------------------------------- setup helpers


def _ensure_lmeval_python() -> None:
    """Re-exec under the lm-eval venv's Python when ``lm_eval`` is not importable here."""
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        venv = Path(os.environ.get("LMEVAL_VENV", DEFAULT_LMEVAL_VENV))
        python = venv / "bin" / "python"
        # Compare environments by sys.prefix: venv pythons are symlinks to one interpreter.
        if python.is_file() and Path(sys.prefix).resolve() != venv.resolve():
            os.execv(str(python), [str(python), *sys.argv])
        sys.exit(
            f"error: lm_eval is not importable from {sys.executable} (prefix {sys.prefix}) "
            f"and not from {python}; create that env with: bash benchmarks/setup_lmeval_env.sh"
        )


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir", type=Path, help="local Hugging Face model folder")
    p.add_argument("--output-dir", type=Path, default=Path("runs/lmeval-truthfulqa"))
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("SEA_DATA_DIR", DEFAULT_DATA_DIR)),
        help="folder holding truthfulqa/mc_task_v0.json (default: $SEA_DATA_DIR or "
        f"{DEFAULT_DATA_DIR})",
    )
    p.add_argument("--tasks", default="mc1,mc2", help="comma list of mc1, mc2")
    p.add_argument("--batch-size", default="8", help="lm-eval batch size (int or 'auto')")
    p.add_argument("--limit", type=int, default=None, help="first N questions only")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument(
        "--add-bos-token",
        choices=("default", "true", "false"),
        default="default",
        help="lm-eval's hf add_bos_token; 'default' leaves it unset as lm-eval does",
    )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = p.parse_args(argv)
    args.task_keys = [t.strip() for t in args.tasks.split(",") if t.strip()]
    bad = [t for t in args.task_keys if t not in TASK_FILES]
    if bad or not args.task_keys:
        p.error(f"--tasks: unknown {bad}; choose from {sorted(TASK_FILES)}")
    if args.limit is not None and args.limit <= 0:
        p.error("--limit must be positive")
    if not (args.model_dir / "config.json").is_file():
        p.error(f"model_dir {args.model_dir}: no config.json (not a Hugging Face folder)")
    return args


def _load_task_configs(task_keys: Iterable[str], data_file: Path) -> list[dict[str, Any]]:
    """Load our task YAMLs (includes and ``!function`` resolved) and point them at data_file."""
    from lm_eval.tasks._yaml_loader import load_yaml

    configs = []
    for key in task_keys:
        cfg = load_yaml(TASKS_DIR / TASK_FILES[key], resolve_func=True)
        cfg["dataset_kwargs"] = {"data_files": {cfg["validation_split"]: str(data_file)}}
        configs.append(cfg)
    return configs


# --------------------------------------------------------------------------- output helpers


def _atomic_write_text(path: Path, text: str) -> None:
    """Write text to path via a temp file in the same folder and os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(obj: Any) -> Any:
    """Fallback for json.dumps: numpy scalars/arrays, tuples, callables -> plain values."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if callable(obj):
        return getattr(obj, "__qualname__", repr(obj))
    return repr(obj)


def _sample_lls(sample: dict[str, Any], where: str) -> tuple[list[float], list[bool]]:
    """Per-choice (loglikelihood, is_greedy) from a logged sample's ``filtered_resps``.

    ``filtered_resps`` has one ``(ll, is_greedy)`` pair per choice (choice order);
    ``resps`` has the same pairs wrapped in one-element lists. Both must agree.
    """
    filtered = sample["filtered_resps"]
    raw = [r[0] for r in sample["resps"]]
    if len(filtered) != len(raw):
        raise RuntimeError(f"{where}: {len(filtered)} filtered_resps vs {len(raw)} resps")
    lls = [float(ll) for ll, _ in filtered]
    if any(float(a) != b for (a, _), b in zip(raw, lls, strict=True)):
        raise RuntimeError(f"{where}: resps and filtered_resps differ")
    return lls, [bool(g) for _, g in filtered]


def _mc2_mass(lls: list[float], labels: list[int]) -> float:
    """Normalised probability mass of the true answers (same maths as lm-eval's mc2)."""
    top = max(lls)
    probs = [math.exp(x - top) for x in lls]
    return sum(p for p, lab in zip(probs, labels, strict=True) if lab == 1) / sum(probs)


def _per_question_rows(samples: dict[str, list[dict]], tasks: dict[str, str]) -> list[dict]:
    """Join the mc1/mc2 logged samples by doc_id into one row per question.

    Each row: ``doc_id``, ``question``, and per task key ``{choices, labels,
    loglikelihoods, is_greedy, value}``; ``value`` is lm-eval's per-question ``acc``.
    Cross-checks: mc1 value == (argmax ll == 0); mc2 value == recomputed true mass.
    """
    rows: dict[int, dict[str, Any]] = {}
    for key, task_name in tasks.items():
        for sample in samples[task_name]:
            doc_id = int(sample["doc_id"])
            where = f"{task_name} doc_id {doc_id}"
            doc = sample["doc"]
            targets = doc[f"{key}_targets"]
            lls, greedy = _sample_lls(sample, where)
            if len(lls) != len(targets["choices"]):
                raise RuntimeError(f"{where}: {len(lls)} scores for {len(targets['choices'])}")
            value = float(sample["acc"])
            if key == "mc1":
                expect = float(max(range(len(lls)), key=lls.__getitem__) == sample["target"])
            else:
                expect = _mc2_mass(lls, targets["labels"])
            if not math.isclose(value, expect, rel_tol=1e-6, abs_tol=1e-9):
                raise RuntimeError(f"{where}: lm-eval acc {value} != recomputed {expect}")
            row = rows.setdefault(doc_id, {"doc_id": doc_id, "question": doc["question"]})
            if row["question"] != doc["question"]:
                raise RuntimeError(f"{where}: question differs between tasks")
            row[key] = {
                "choices": list(targets["choices"]),
                "labels": [int(x) for x in targets["labels"]],
                "loglikelihoods": lls,
                "is_greedy": greedy,
                "value": value,
            }
    return [rows[k] for k in sorted(rows)]


def _tokenization_report(lm: Any, context: str, first_choice: str) -> dict[str, Any]:
    """How lm-eval's hf model tokenises the first request (BOS handling, pair split)."""
    tok = lm.tokenizer
    ctx_ids = lm.tok_encode(context)
    ctx_enc, cont_enc = lm._encode_pair(context, " " + first_choice)
    return {
        "tokenizer_class": type(tok).__name__,
        "bos_token": tok.bos_token,
        "bos_token_id": tok.bos_token_id,
        "tokenizer_add_bos_token_attr": getattr(tok, "add_bos_token", None),
        "lmeval_add_bos_token": lm.add_bos_token,
        "context_first_ids": ctx_ids[:4],
        "context_starts_with_bos": bool(ctx_ids) and ctx_ids[0] == tok.bos_token_id,
        "context_num_tokens": len(ctx_ids),
        "first_continuation": " " + first_choice,
        "first_continuation_ids": cont_enc,
        "pair_context_equals_context_encoding": ctx_enc == ctx_ids,
    }


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Run the reference evaluation; returns a process exit code."""
    _ensure_lmeval_python()
    args = _parse_args(argv)
    data_file = (args.data_dir / DATA_RELPATH).resolve()
    if not data_file.is_file():
        sys.exit(f"error: {data_file} not found (set --data-dir or SEA_DATA_DIR)")

    import lm_eval
    import torch
    import transformers
    from lm_eval.models.huggingface import HFLM

    if args.threads:
        torch.set_num_threads(args.threads)
    configs = _load_task_configs(args.task_keys, data_file)
    task_names = {k: c["task"] for k, c in zip(args.task_keys, configs, strict=True)}

    bos = {"default": None, "true": True, "false": False}[args.add_bos_token]
    batch_size: int | str = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    t0 = time.perf_counter()
    lm = HFLM(
        pretrained=str(args.model_dir),
        dtype=args.dtype,
        device=args.device,
        batch_size=batch_size,
        add_bos_token=bos,
    )
    t_load = time.perf_counter() - t0

    t1 = time.perf_counter()
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=configs,
        limit=args.limit,
        log_samples=True,
        bootstrap_iters=1000,
    )
    t_eval = time.perf_counter() - t1
    if results is None:  # only on non-zero ranks in distributed runs
        return 0

    rows = _per_question_rows(results["samples"], task_names)
    first_sample = results["samples"][task_names[args.task_keys[0]]][0]
    context, first_cont = first_sample["arguments"][0][:2]
    tok_report = _tokenization_report(lm, context, first_cont.lstrip(" "))

    summary: dict[str, Any] = {
        "model_dir": str(args.model_dir.resolve()),
        "data_file": str(data_file),
        "n_questions": len(rows),
        "limit": args.limit,
        "batch_size": args.batch_size,
        "device": args.device,
        "dtype": args.dtype,
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "lm_eval": lm_eval.__version__ if hasattr(lm_eval, "__version__") else None,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "wall_time_s": {
            "model_load": round(t_load, 2),
            "evaluate": round(t_eval, 2),
            "total": round(t_load + t_eval, 2),
        },
        "first_prompt": context,
        "tokenization": tok_report,
    }
    for key, name in task_names.items():
        res = results["results"][name]
        summary[key] = 100.0 * float(res["acc,none"])
        stderr = res.get("acc_stderr,none")
        summary[f"{key}_stderr"] = 100.0 * float(stderr) if isinstance(stderr, float) else None
        summary[f"{key}_mean_check"] = 100.0 * sum(r[key]["value"] for r in rows) / len(rows)

    out = args.output_dir
    _atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=_jsonable))
    _atomic_write_text(
        out / "per_question.jsonl",
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
    )
    raw = {k: v for k, v in results.items() if k != "samples"}
    _atomic_write_text(out / "lmeval_results.json", json.dumps(raw, indent=2, default=_jsonable))
    parts = [f"{k.upper()} {summary[k]:.2f}%" for k in task_names]
    print(
        f"[lmeval-truthfulqa] {len(rows)} questions: {', '.join(parts)}; "
        f"load {t_load:.1f}s, evaluate {t_eval:.1f}s -> {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
