"""Shared plumbing of the peer-package runners (``run_steering_vectors.py``, ``run_repeng.py``).

Each runner runs in its OWN virtualenv (transformers 4.57, see ``setup_peer_envs.sh``) and
imports this module from its own folder. It uses only the standard library, torch,
transformers and ``spectral_edit`` (no peer package), so both runners share:

- the command line (:func:`build_parser`, :func:`parse_args`);
- model, demonstration and question loading (the project's loaders, so the texts are the
  ones our baselines use: ``prompt + answer_text(answer)``);
- the strength sweep under the project's one scorer (:func:`sweep`), with its checks:
  strength 0 must reproduce the unedited log-probabilities and a non-zero strength must
  change them (so the peer's intervention really passes through our scorer);
- the result file (:func:`write_result`, atomic).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from spectral_edit.data.splits import truthfulqa_questions
from spectral_edit.data.truthfulqa import MCQuestion
from spectral_edit.demos.format import read_demos
from spectral_edit.demos.prompts import answer_text
from spectral_edit.evaluate.truthfulqa import evaluate_truthfulqa
from spectral_edit.hf.layers import find_decoder_layers, parse_layers
from spectral_edit.util.atomic import atomic_write_text

ZERO_TOLERANCE = 1e-6
"""Largest |Δ log-prob| (nats, any answer) that still counts as "unchanged"."""

BASE_DISTRIBUTIONS = ("torch", "transformers", "tokenizers", "numpy", "scikit-learn")

Steer = Callable[[float], contextlib.AbstractContextManager[Any]]
"""``steer(strength)``: a context manager inside which the peer's intervention is active."""


# ----------------------------------------------------------------------------- arguments


def _strengths(values: Sequence[str]) -> list[float]:
    """``["0", "1,2"]`` -> ``[0.0, 1.0, 2.0]`` (space- or comma-separated, order kept)."""
    out = [float(part) for value in values for part in value.split(",") if part.strip()]
    if not out:
        raise argparse.ArgumentTypeError("at least one --strength is needed")
    if any(not math.isfinite(s) for s in out):
        raise argparse.ArgumentTypeError(f"strengths must be finite, got {out}")
    return out


def build_parser(description: str, strength_help: str) -> argparse.ArgumentParser:
    """The common command line; a runner may add its own options before parsing."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", required=True, type=Path, help="local HF model folder")
    parser.add_argument(
        "--demos", required=True, type=Path, help="our JSONL demos: prompt, positive, negative"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="data dir (truthfulqa/...); else $SEA_DATA_DIR"
    )
    parser.add_argument("--layers", required=True, help='"10,11,...", "last-8" or "all"')
    parser.add_argument("--strength", nargs="+", required=True, help=strength_help)
    parser.add_argument(
        "--fold", type=int, choices=(1, 2), default=None, help="evaluate SEA fold 1 or 2 only"
    )
    parser.add_argument("--limit", type=int, default=None, help="first N questions (of the fold)")
    parser.add_argument(
        "--mc-file", default="mc_task_v0.json", help="mc_task_v0.json (lm-eval) or mc_task.json"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="scorer batch size")
    parser.add_argument(
        "--fit-batch-size",
        type=int,
        default=1,
        help="peer's batch size when reading demo activations (1 = no padding)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", required=True, type=Path, help="result JSON file")
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse and normalise: ``args.strength`` becomes a list of floats."""
    args = parser.parse_args(argv)
    try:
        args.strength = _strengths(args.strength)
    except (ValueError, argparse.ArgumentTypeError) as error:
        parser.error(f"--strength: {error}")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be >= 1")
    torch.set_num_threads(args.threads or 1)
    return args


# ----------------------------------------------------------------------------- inputs


def load_model(
    model_dir: Path, device: str
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase, list[str]]:
    """Float32 causal LM (eval mode) and its tokenizer from a local folder, and the list of
    compatibility shims applied to it (a runner adds its own). None are needed for loading:
    transformers 4.57's Gemma 3 names a ``base_model_prefix`` it does not have, and our
    scorer finds the decoder by its layers then (``evaluate.heads.decoder_and_head``)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model.to(device).eval(), tokenizer, []


def demo_pairs(path: Path) -> list[tuple[str, str]]:
    """``(prompt + " " + positive, prompt + " " + negative)`` per demonstration, i.e. the
    texts whose last-token activations our mean-difference and PCA baselines read."""
    return [
        (d.prompt + answer_text(d.positive), d.prompt + answer_text(d.negative))
        for d in read_demos(path)
    ]


def load_questions(
    data_dir: Path | None, mc_file: str, fold: int | None, limit: int | None
) -> list[MCQuestion]:
    """The TruthfulQA MC questions (of one SEA fold), first ``limit`` of them."""
    return truthfulqa_questions(mc_file, data_dir, fold=fold, limit=limit or None)


def resolve_layers(spec: str, model: torch.nn.Module) -> list[int]:
    """0-based decoder-layer indices (sorted, unique) from a layer spec."""
    return parse_layers(spec, len(find_decoder_layers(model)))


# ----------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Evaluation:
    """One TruthfulQA pass: the summary (percent, n, seconds), per-question MC scores
    (fractions) and every scored answer's log-probability, flattened in question order
    (MC1 answers then MC2 answers of each question)."""

    summary: dict[str, Any]
    per_question: list[dict[str, float]]
    logprobs: list[float]


def evaluate(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[MCQuestion],
    batch_size: int,
) -> Evaluation:
    """Our scorer on ``questions`` with whatever hooks are currently on ``model``."""
    result = evaluate_truthfulqa(model, tokenizer, questions, batch_size=batch_size)
    rows = [{k: row[k] for k in ("mc1", "mc2", "mc3")} for row in result.per_question]
    logprobs = [
        lp for row in result.per_question for lp in (*row["mc1_logprobs"], *row["mc2_logprobs"])
    ]
    return Evaluation(dict(result.summary), rows, logprobs)


def _max_abs_diff(a: Sequence[float], b: Sequence[float]) -> float:
    return max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0)


def _record(evaluation: Evaluation, unedited: Evaluation | None) -> dict[str, Any]:
    s = evaluation.summary
    row: dict[str, Any] = {
        "mc1": s["mc1"],
        "mc2": s["mc2"],
        "mc3": s["mc3"],
        "n": s["n"],
        "eval_seconds": s["seconds"],
    }
    if unedited is not None:
        row["max_abs_logprob_diff_vs_unedited"] = _max_abs_diff(
            evaluation.logprobs, unedited.logprobs
        )
    row["per_question"] = evaluation.per_question
    return row


def sweep(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[MCQuestion],
    strengths: Sequence[float],
    steer: Steer,
    unedited: Evaluation,
    batch_size: int,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Evaluate under ``steer(s)`` for every strength; one JSON-ready row per strength."""
    rows = []
    for strength in strengths:
        with steer(strength):
            evaluation = evaluate(model, tokenizer, questions, batch_size)
        row = {"strength": strength, **_record(evaluation, unedited)}
        log(
            f"strength {strength:g}: MC1 {row['mc1']:.2f} MC2 {row['mc2']:.2f} "
            f"MC3 {row['mc3']:.2f} ({row['eval_seconds']:.1f} s, "
            f"max |dlogp| vs unedited {row['max_abs_logprob_diff_vs_unedited']:.3g})"
        )
        rows.append(row)
    return rows


def checks(rows: Sequence[dict[str, Any]]) -> dict[str, bool | None]:
    """Pass-through checks (``None`` where the sweep has no such strength)."""
    zero = [r for r in rows if r["strength"] == 0]
    nonzero = [r for r in rows if r["strength"] != 0]
    diff = "max_abs_logprob_diff_vs_unedited"
    return {
        "zero_strength_matches_unedited": (
            all(r[diff] <= ZERO_TOLERANCE for r in zero) if zero else None
        ),
        "nonzero_strength_changes_scores": (
            all(r[diff] > ZERO_TOLERANCE for r in nonzero) if nonzero else None
        ),
    }


# ----------------------------------------------------------------------------- output


def versions(extra: Sequence[str]) -> dict[str, str | None]:
    """Installed versions of the peer package(s), our package and the base libraries."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in (*extra, "spectral-edit", *BASE_DISTRIBUTIONS):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def run_info(args: argparse.Namespace, layers: Sequence[int], n_pairs: int) -> dict[str, Any]:
    """The run's configuration as recorded in the result file."""
    return {
        "model": str(args.model),
        "demos": str(args.demos),
        "n_pairs": n_pairs,
        "data_dir": str(args.data_dir) if args.data_dir else os.environ.get("SEA_DATA_DIR"),
        "mc_file": args.mc_file,
        "fold": args.fold,
        "limit": args.limit,
        "layers": list(layers),
        "strengths": list(args.strength),
        "batch_size": args.batch_size,
        "fit_batch_size": args.fit_batch_size,
        "threads": torch.get_num_threads(),
        "device": args.device,
    }


def write_result(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON atomically (temporary sibling, then os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds`` (wall time of the block)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start = 0.0

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start


# ----------------------------------------------------------------------------- one run


@dataclass
class Run:
    """What every runner does before fitting: parse, load, read, score the unedited model."""

    tag: str
    args: argparse.Namespace
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    shims: list[str]
    layers: list[int]
    pairs: list[tuple[str, str]]
    questions: list[MCQuestion]
    unedited: Evaluation
    load_seconds: float

    @classmethod
    def start(cls, tag: str, parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> Run:
        args = parse_args(parser, argv)
        with Timer() as load:
            model, tokenizer, shims = load_model(args.model, args.device)
        layers = resolve_layers(args.layers, model)
        pairs = demo_pairs(args.demos)
        questions = load_questions(args.data_dir, args.mc_file, args.fold, args.limit)
        print(f"[{tag}] {len(pairs)} pairs, layers {layers}, {len(questions)} questions")
        unedited = evaluate(model, tokenizer, questions, args.batch_size)
        summary = unedited.summary
        print(f"[{tag}] unedited: MC1 {summary['mc1']:.2f} MC2 {summary['mc2']:.2f}")
        return cls(
            tag,
            args,
            model,
            tokenizer,
            list(shims),
            layers,
            pairs,
            questions,
            unedited,
            load.seconds,
        )

    def sweep(self, steer: Steer, model: torch.nn.Module | None = None) -> list[dict[str, Any]]:
        """:func:`sweep` over the run's strengths (``model``: what the scorer runs)."""
        return sweep(
            model or self.model,
            self.tokenizer,
            self.questions,
            self.args.strength,
            steer,
            self.unedited,
            self.args.batch_size,
        )

    def finish(
        self,
        rows: list[dict[str, Any]],
        fit_seconds: float,
        packages: Sequence[str],
        description: dict[str, Any],
        extra_seconds: dict[str, float] | None = None,
    ) -> int:
        """Write the result file: ``description`` (peer, method, ...) then the common parts."""
        payload = {
            **description,
            "versions": versions(packages),
            "config": run_info(self.args, self.layers, len(self.pairs)),
            "compat_shims": self.shims,
            "seconds": {
                "model_load": self.load_seconds,
                "fit": fit_seconds,
                "eval_unedited": self.unedited.summary["seconds"],
                "eval_per_strength": [row["eval_seconds"] for row in rows],
                **(extra_seconds or {}),
            },
            "unedited": {k: self.unedited.summary[k] for k in ("mc1", "mc2", "mc3", "n")},
            "results": rows,
            "checks": checks(rows),
        }
        write_result(self.args.out, payload)
        print(f"[{self.tag}] checks {payload['checks']}; wrote {self.args.out}")
        return 0
