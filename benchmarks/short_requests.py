#!/usr/bin/env python
"""The scorer on a CPU: short requests packed many per forward pass against one at a time.

On one loaded model, scores with :func:`~spectral_edit.evaluate.scorer.score_requests`

- CrowS-Pairs-shaped requests: ``--pairs`` pairs of short sentences as CrowS-Pairs scores
  them (empty context, two whole sentences; the sentences are TruthfulQA questions from
  ``$SEA_DATA_DIR/truthfulqa/mc_task_v0.json``, ~15–25 tokens, since the CrowS-Pairs file
  is not available here), and
- BBQ requests: the first ``--bbq`` items of ``$SEA_DATA_DIR/bbq/official/Age.jsonl``
  (passage + question, three options),

after an untimed warm-up on the first 8 requests, each with ``share_contexts=True``
(every context run alone: the CPU default before), ``False`` (everything packed) and
the default (``None``: on a CPU, requests whose context is cheap to rerun per
continuation are packed, the others shared), and writes the times, the rate and the
largest score difference against the one-at-a-time scores (JSON).

    python benchmarks/short_requests.py --output benchmarks/results/short_requests_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from spectral_edit import load_model
from spectral_edit.data.bbq import load_bbq
from spectral_edit.data.truthfulqa import load_mc_task
from spectral_edit.demos.prompts import bbq_continuations, bbq_prompt
from spectral_edit.evaluate.scorer import ChoiceRequest, score_requests
from spectral_edit.util.report import write_json

MODES = {"one_at_a_time": True, "all_packed": False, "default": None}


def timed_modes(model, tokenizer, requests, batch_size: int) -> dict:
    """Seconds, requests per second and the largest |Δ log p| against one at a time."""
    out, reference = {}, None
    score_requests(model, tokenizer, requests[:8], batch_size=batch_size)  # warm-up, untimed
    for name, mode in MODES.items():
        started = time.perf_counter()
        scores = score_requests(
            model, tokenizer, requests, share_contexts=mode, batch_size=batch_size
        )
        seconds = time.perf_counter() - started
        flat = [s.logprob for request in scores for s in request]
        reference = reference or flat
        out[name] = {
            "seconds": round(seconds, 2),
            "requests_per_second": round(len(requests) / seconds, 2),
            "max_abs_logprob_diff": max(abs(a - b) for a, b in zip(flat, reference, strict=True)),
        }
    out["speedup_default_over_one_at_a_time"] = round(
        out["one_at_a_time"]["seconds"] / out["default"]["seconds"], 2
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("SEA_DATA_DIR", ".")))
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--bbq", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    model, tokenizer = load_model(args.model)
    questions = [q.question for q in load_mc_task(args.data_dir / "truthfulqa" / "mc_task_v0.json")]
    pairs = [ChoiceRequest("", (questions[2 * i], questions[2 * i + 1])) for i in range(args.pairs)]
    items = load_bbq(args.data_dir / "bbq" / "official" / "Age.jsonl")[: args.bbq]
    bbq = [ChoiceRequest(bbq_prompt(item), bbq_continuations(item)) for item in items]
    report = {
        "model": args.model,
        "batch_size": args.batch_size,
        "crows_pairs_shaped": {
            "pairs": len(pairs),
            **timed_modes(model, tokenizer, pairs, args.batch_size),
        },
        "bbq_age": {"items": len(bbq), **timed_modes(model, tokenizer, bbq, args.batch_size)},
        "machine": {"platform": platform.platform(), "torch_threads": torch.get_num_threads()},
    }
    if args.output:
        write_json(args.output, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
