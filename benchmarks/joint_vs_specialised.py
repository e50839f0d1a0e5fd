#!/usr/bin/env python
"""Issue-15 study: one editor on pooled truthfulness + bias demonstrations against the two
specialised editors, alone and composed, on TruthfulQA MC1/MC2 and held-out BBQ.

The study itself is :func:`spectral_edit.experiments.joint_study.joint_vs_specialised`
(resumable in ``--out``: a rerun with the same options reuses every stage); this script
parses the options, runs it and prints the Markdown table it writes to ``report.md``.

Example (CPU, Gemma 3 270M)::

    python benchmarks/joint_vs_specialised.py --out runs/joint --data-dir $SEA_DATA_DIR \\
        --n-truth 100 --n-bias 100 --tqa-limit 100 --bbq-limit 200
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from spectral_edit.core.options import SeaOptions
from spectral_edit.experiments.joint_study import (
    BIAS_OPTIONS,
    TRUTH_OPTIONS,
    JointStudyOptions,
    joint_vs_specialised,
)


def _limit(text: str) -> int | None:
    return None if text == "all" else int(text)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--n-truth", type=int, default=100, help="HaluEval demonstrations")
    parser.add_argument("--n-bias", type=int, default=100, help="BBQ demonstrations")
    parser.add_argument("--tqa-limit", type=_limit, default=100, help="TruthfulQA questions")
    parser.add_argument("--bbq-limit", type=_limit, default=200, help="held-out BBQ items")
    parser.add_argument("--mc-file", default="mc_task_v0.json")
    parser.add_argument("--seed", type=int, default=0, help="BBQ split and sample seed")
    parser.add_argument("--truth-layers", default=str(TRUTH_OPTIONS.layers))
    parser.add_argument("--bias-layers", default=str(BIAS_OPTIONS.layers))
    parser.add_argument("--bias-feature", default=str(BIAS_OPTIONS.feature))
    parser.add_argument(
        "--joint-like",
        choices=("truthfulness", "bias"),
        default="truthfulness",
        help="whose fit options (layers, feature) the joint editor uses",
    )
    parser.add_argument("--neutral", default=str(TRUTH_OPTIONS.neutral))
    parser.add_argument(
        "--ratio", type=float, default=TRUTH_OPTIONS.pos_ratio, help="energy ratio r+ = r-"
    )
    parser.add_argument("--pos-rank", type=int, default=None, help="fix k+ (instead of --ratio)")
    parser.add_argument("--neg-rank", type=int, default=None, help="fix k- (instead of --ratio)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dtype", default=None)
    args = parser.parse_args(argv)

    common = {"neutral": args.neutral, "pos_ratio": args.ratio, "neg_ratio": args.ratio}
    common |= {"pos_rank": args.pos_rank, "neg_rank": args.neg_rank}
    truth = TRUTH_OPTIONS.replace(layers=args.truth_layers, **common)
    bias: SeaOptions = BIAS_OPTIONS.replace(
        layers=args.bias_layers, feature=args.bias_feature, **common
    )
    options = JointStudyOptions(
        n_truth=args.n_truth,
        n_bias=args.n_bias,
        tqa_limit=args.tqa_limit,
        bbq_limit=args.bbq_limit,
        mc_file=args.mc_file,
        seed=args.seed,
        truth=truth,
        bias=bias,
        joint=truth if args.joint_like == "truthfulness" else bias,
        batch_size=args.batch_size,
    )
    report = joint_vs_specialised(
        args.model,
        options,
        out_dir=args.out,
        data_dir=args.data_dir,
        dtype=args.dtype,
        echo=lambda message: print(message, flush=True),
        progress=True,
    )
    print((args.out / "report.md").read_text(encoding="utf-8"))
    print(f"{report['seconds']:.0f} s; results in {args.out}/")


if __name__ == "__main__":
    main()
