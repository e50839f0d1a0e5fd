#!/usr/bin/env python
"""Issue-3 experiment: HaluEval demonstrations → SEA → TruthfulQA, with fold-based selection.

Captures the demonstrations' activations once (all layers, neutral = the model's greedy
answer, and neutral = last prompt token for the ablation), then fits a grid of editors
(N demonstrations × layers × energy ratios × centring) and runs the fold protocol for
each direction (tune fold → test fold): every candidate on the tune fold's questions
(``mc_task_v0.json``), then the best (mean of MC1 and MC2) on the test fold, with the
unedited model on the test fold. A setting already scored on all questions counts for
both folds. Each evaluation is appended to ``grid.jsonl`` (see ``grid_rows.py``) as soon
as it exists (rows of the project's one store, :mod:`spectral_edit.experiments.store`),
so an interrupted run keeps what it finished and a rerun does only what is missing;
``--shard i/k`` splits the work between k processes sharing ``--out`` (``--capture-only``
first, so that they share one activation file, keyed by the model and the
demonstrations; rerun without ``--shard`` at the end for the test-fold evaluations of the
chosen settings).
``benchmarks/summarize_grid.py`` writes the tables from that file.

    python benchmarks/truthfulness_grid.py --model gemma-3-270m --out runs/grid \\
        --data-dir ../shared/data --budget 600
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import time
from pathlib import Path

import torch
from grid_rows import ROWS, fold_positions, grid_settings, select

from spectral_edit.data.splits import truthfulqa_questions
from spectral_edit.demos.activations import DemoActivations, capture_demos
from spectral_edit.editors.sea_fit import SpectralFitter
from spectral_edit.evaluate.truthfulqa import evaluate_truthfulqa
from spectral_edit.experiments.demo_job import load_truthfulness_demos
from spectral_edit.experiments.folds import Direction
from spectral_edit.experiments.store import Store, options_key
from spectral_edit.hf.capture import capture
from spectral_edit.hf.layers import find_decoder_layers
from spectral_edit.hf.models import load_model
from spectral_edit.util.atomic import atomic_write_text


def _subset(acts: DemoActivations, n: int, layers: list[int]) -> DemoActivations:
    index = [acts.layers.index(layer) for layer in layers]
    return DemoActivations(
        acts.neutral[:n, index], acts.positive[:n, index], acts.negative[:n, index], tuple(layers)
    )


def _name(config: dict) -> str:
    return "sea n={n} last-{last} r={ratio} {c} neutral={neutral} merge={merge}".format(
        c="centred" if config["centered"] else "uncentred", **config
    )


def _configs(args, ns: list[int]) -> tuple[list[dict], list[dict]]:
    """(fold-protocol candidates, ablations scored on every question)."""
    centerings = {"centred": (True,), "uncentred": (False,), "both": (True, False)}
    last_ls = [int(x) for x in args.layers.split(",")]
    ratios = [float(x) for x in args.ratios.split(",")]
    candidates = [
        {"n": n, "last": last, "ratio": ratio, "centered": centered}
        | {"neutral": "generate", "merge": "norm"}
        for n in sorted(ns, key=lambda v: (v != 100, v))  # N = 100 (the paper's regime) first
        for centered, last, ratio in itertools.product(centerings[args.centering], last_ls, ratios)
    ]
    ablations = []
    if args.ablations:
        best_guess = {"n": min(100, max(ns)), "last": 8, "ratio": 0.99, "centered": True}
        for variant in ({"neutral": "prompt"}, {"merge": "mean"}):
            ablations.append({**best_guess, "neutral": "generate", "merge": "norm", **variant})
    return candidates, ablations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument(
        "--budget", type=float, default=600, help="seconds; no new evaluation starts after this"
    )
    parser.add_argument(
        "--acts",
        type=Path,
        default=None,
        help="activation cache, a .safetensors file (default: OUT/activations.safetensors)",
    )
    parser.add_argument("--n", default="25,100,500,1000")
    parser.add_argument("--layers", default="2,4,8,18", help="last-L values")
    parser.add_argument("--ratios", default="0.99,0.995,0.999")
    parser.add_argument("--centering", choices=("both", "centred", "uncentred"), default="both")
    parser.add_argument(
        "--directions", default="1-2,2-1", help="tune-test fold pairs, e.g. 1-2 or 1-2,2-1"
    )
    parser.add_argument(
        "--ablations",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="neutral = prompt and merge = mean at N = 100, last-8, r = 0.99 (all questions)",
    )
    parser.add_argument("--shard", default="0/1", help="i/k: this process does units i, i+k, ...")
    parser.add_argument("--capture-only", action="store_true")
    parser.add_argument("--limit", type=int, default=None, help="questions (for smoke tests)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--gen-batch-size", type=int, default=64)
    args = parser.parse_args()
    start = time.perf_counter()
    shard, shards = (int(x) for x in args.shard.split("/"))
    store = Store(args.out)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_model(args.model)
    model.to(device)
    n_layers = len(find_decoder_layers(model))
    questions = truthfulqa_questions("mc_task_v0.json", args.data_dir, limit=args.limit or None)
    texts = [q.question for q in questions]
    questions_path = store.path("questions.json")
    with store.lock(ROWS):
        if questions_path.exists() and json.loads(questions_path.read_text()) != texts:
            raise SystemExit(f"{questions_path}: another question list (different --limit?)")
        if not questions_path.exists():
            atomic_write_text(questions_path, json.dumps(texts))
    folds = fold_positions(texts, args.data_dir)
    subsets = {"all": list(range(len(questions))), **{f"fold{k}": v for k, v in folds.items()}}
    directions = [Direction.parse(d) for d in args.directions.split(",")]
    ns = [int(x) for x in args.n.split(",")]
    demos = load_truthfulness_demos(max(ns), args.data_dir, fallback=False).demos
    ns = [n for n in ns if n <= len(demos)]

    def record(name: str, options: dict, index: list[int], result, seconds, editor=None) -> None:
        row = {
            "name": name,
            "options": options,
            "question_index": index,
            "summary": result.summary,
            "seconds": seconds,
            **{m: [q[m] for q in result.per_question] for m in ("mc1", "mc2", "mc3")},
        }
        if editor is not None:
            row["ranks"] = {str(k): list(editor.ranks[k]) for k in editor.active_layers}
        store.append(ROWS, row)
        print(
            f"[{time.perf_counter() - start:6.0f}s] {name} on {len(index)} questions: "
            f"MC1 {result.summary['mc1']:.1f} MC2 {result.summary['mc2']:.1f} "
            f"MC3 {result.summary['mc3']:.1f} ({seconds:.1f}s)",
            flush=True,
        )

    def evaluate(index: list[int], editor=None):
        t0 = time.perf_counter()
        subset = [questions[i] for i in index]
        with contextlib.nullcontext() if editor is None else editor.apply(model):
            result = evaluate_truthfulqa(model, tokenizer, subset, batch_size=args.batch_size)
        return result, time.perf_counter() - t0

    all_layers = list(range(n_layers))
    path = args.acts or args.out / "activations.safetensors"

    def capture_all() -> dict[str, torch.Tensor]:
        generated = capture_demos(
            model,
            tokenizer,
            demos,
            layers=all_layers,
            neutral="generate",
            batch_size=args.gen_batch_size,
            progress=True,
        )
        prompts = [d.prompt for d in demos]
        prompt_last = capture(
            model, tokenizer, prompts, layers=all_layers, batch_size=args.gen_batch_size
        )
        return {
            "neutral": generated.neutral,
            "positive": generated.positive,
            "negative": generated.negative,
            "neutral_prompt": prompt_last,
        }

    t0 = time.perf_counter()
    acts_key = {
        "model": args.model,
        "demos": options_key({"d": [dataclasses.asdict(d) for d in demos]}),
        "layers": all_layers,
        "neutral": ["generate", "prompt-last-token"],
    }
    # one process captures (under the store's lock), the others wait and load
    name = path.name.removesuffix(".safetensors")
    saved = Store(path.parent).tensors(name, acts_key, capture_all, shared=True)
    acts = {
        "generate": DemoActivations(
            saved["neutral"], saved["positive"], saved["negative"], tuple(all_layers)
        ),
        "prompt": DemoActivations(
            saved["neutral_prompt"], saved["positive"], saved["negative"], tuple(all_layers)
        ),
    }
    print(f"activations ({len(demos)} demos): {time.perf_counter() - t0:.1f}s", flush=True)
    if args.capture_only:
        return

    fitters: dict[tuple, SpectralFitter] = {}

    def editor_for(config: dict):
        """Fit once per (N, centring, neutral) on all layers; ranks per ratio; then edit
        only the last L layers (the SVDs are shared by every ratio and L)."""
        key = (config["n"], config["centered"], config["neutral"])
        if key not in fitters:
            fitter = SpectralFitter(
                all_layers,
                acts["generate"].neutral.shape[-1],
                n_layers,
                centered=config["centered"],
            )
            sub = _subset(acts[config["neutral"]], config["n"], all_layers)
            fitter.update(sub.neutral, sub.positive, sub.negative)
            fitters[key] = fitter
        editor = fitters[key].fit(
            pos_ratio=config["ratio"], neg_ratio=config["ratio"], merge=config["merge"]
        )
        return editor.with_options(layers=all_layers[-config["last"] :])

    candidates, ablations = _configs(args, ns)
    units = [("unedited", None, f"fold{d.test}") for d in directions]
    units += [(_name(c), c, f"fold{d.tune}") for d in directions for c in candidates]
    units += [(_name(c), c, "all") for c in ablations]

    def run(units) -> bool:
        """Evaluate each unit's missing questions; False once the budget is spent."""
        for name, config, subset in units:
            setting = grid_settings(args.out, locked=True).get(name)
            index = [i for i in subsets[subset] if setting is None or i not in setting.scores]
            if not index:
                continue
            if time.perf_counter() - start > args.budget:
                print(f"budget reached; stopping before {name} on {subset}", flush=True)
                return False
            editor = None if config is None else editor_for(config)
            result, seconds = evaluate(index, editor)
            record(name, config or {}, index, result, seconds, editor)
        return True

    if not run(units[shard::shards]):
        return
    # the chosen settings on their test folds (once every candidate has its tune fold)
    settings = grid_settings(args.out, locked=True)
    chosen = []
    for n in ns:
        pool = [settings[_name(c)] for c in candidates if c["n"] == n and _name(c) in settings]
        if len(pool) < sum(c["n"] == n for c in candidates):
            continue
        for d in directions:
            best = select(pool, folds[d.tune])
            if best is not None:
                chosen.append((best.name, best.options, f"fold{d.test}"))
    run(chosen[shard::shards])


if __name__ == "__main__":
    main()
