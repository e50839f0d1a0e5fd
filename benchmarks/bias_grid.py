#!/usr/bin/env python
"""Issue-4 experiment: BBQ demonstrations → SEA and Φ-SEA → held-out BBQ (+ TruthfulQA).

Demonstrations are disambiguated items of the official BBQ category files, drawn by
template (no evaluation item shares a template with a demonstration; N = 25 and 100 are
prefixes of the N = 1000 draw, and all N are evaluated on the same held-out items, a
stratified sample of up to ``--per-cell`` items per category × context condition).
For each N, feature map (linear, tanh, elu, squared-exponential) and centring, an editor
is fitted on the last ``--last`` layers and evaluated; rows are appended to
``bias.jsonl`` as they finish (a rerun skips finished rows).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict
from pathlib import Path

import torch

from spectral_edit.builders import bbq_demos
from spectral_edit.data import load_bbq_dir, load_mc_task, resolve
from spectral_edit.demos import DemoActivations, capture_demos
from spectral_edit.evaluate.bbq import evaluate_bbq, split_bbq_items
from spectral_edit.evaluate.truthfulqa import evaluate_truthfulqa
from spectral_edit.layers import find_decoder_layers
from spectral_edit.models import load_model
from spectral_edit.pipeline import fit_from_activations

FEATURES = ("linear", "tanh", "elu", "squared-exponential")


def _stratified(items, per_cell: int, seed: int):
    cells = defaultdict(list)
    for item in items:
        cells[(item.category, item.context_condition)].append(item)
    rng = random.Random(seed)
    out = []
    for key in sorted(cells):
        chosen = list(cells[key])
        rng.shuffle(chosen)
        out += chosen[:per_cell]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--budget", type=float, default=600)
    parser.add_argument("--n", default="25,100,1000")
    parser.add_argument("--last", type=int, default=2)
    parser.add_argument("--ratio", type=float, default=0.99)
    parser.add_argument("--per-cell", type=int, default=300)
    parser.add_argument("--tqa-limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--gen-batch-size", type=int, default=64)
    args = parser.parse_args()
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bias.jsonl"
    done = (
        {json.loads(x)["name"] for x in path.read_text().splitlines() if x}
        if path.exists()
        else set()
    )

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_model(args.model)
    model.to(device)
    n_layers = len(find_decoder_layers(model))
    items = load_bbq_dir(Path(resolve("bbq/official/Age.jsonl", args.data_dir)).parent)
    ns = sorted(int(x) for x in args.n.split(","))
    demo_items, held_out = split_bbq_items(items, max(ns), seed=0, max_per_group=20)
    eval_items = _stratified(held_out, args.per_cell, seed=0)
    demos = bbq_demos(demo_items)
    questions = load_mc_task(resolve("truthfulqa/mc_task_v0.json", args.data_dir))
    questions = questions[: args.tqa_limit] if args.tqa_limit else questions
    print(
        f"{len(items)} BBQ items; {len(demo_items)} demonstrations; {len(held_out)} held out; "
        f"{len(eval_items)} evaluated",
        flush=True,
    )

    def record(name, options, bbq, tqa, seconds, editor=None):
        row = {
            "name": name,
            "options": options,
            "bbq": bbq.summary,
            "seconds": seconds,
            "truthfulqa": None if tqa is None else tqa.summary,
        }
        if editor is not None:
            row["ranks"] = {str(k): list(v) for k, v in editor.ranks.items()}
        with path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        overall = bbq.summary["overall"]
        print(
            f"[{time.perf_counter() - start:5.0f}s] {name}: "
            f"acc amb {overall['ambig']['accuracy']:.1f} dis {overall['disambig']['accuracy']:.1f}"
            f" bias amb {overall['ambig']['bias_score']} dis {overall['disambig']['bias_score']}"
            + (
                ""
                if tqa is None
                else f" | TQA MC1 {tqa.summary['mc1']:.1f} MC2 {tqa.summary['mc2']:.1f}"
            ),
            flush=True,
        )

    def run(editor, with_tqa):
        t0 = time.perf_counter()
        context = editor.apply(model) if editor is not None else torch.no_grad()
        with context:
            bbq = evaluate_bbq(model, tokenizer, eval_items, batch_size=args.batch_size)
            tqa = (
                evaluate_truthfulqa(model, tokenizer, questions, batch_size=args.batch_size)
                if with_tqa
                else None
            )
        return bbq, tqa, time.perf_counter() - t0

    if "unedited" not in done:
        bbq, tqa, seconds = run(None, True)
        record("unedited", {}, bbq, tqa, seconds)
    layers = list(range(n_layers - args.last, n_layers))
    t0 = time.perf_counter()
    acts = capture_demos(
        model, tokenizer, demos, layers=layers, neutral="generate", batch_size=args.gen_batch_size
    )
    print(f"activations: {time.perf_counter() - t0:.1f}s", flush=True)
    for n in sorted(ns, reverse=True):
        for feature in FEATURES:
            for centered in (False, True):
                name = f"{feature} n={n} last-{args.last} r={args.ratio} " + (
                    "centred" if centered else "uncentred"
                )
                if name in done:
                    continue
                if time.perf_counter() - start > args.budget:
                    print(f"budget reached before {name}", flush=True)
                    return
                sub = DemoActivations(
                    acts.neutral[:n], acts.positive[:n], acts.negative[:n], acts.layers
                )
                editor = fit_from_activations(
                    sub,
                    n_layers,
                    pos_ratio=args.ratio,
                    neg_ratio=args.ratio,
                    centered=centered,
                    feature=feature,
                )
                bbq, tqa, seconds = run(editor, with_tqa=n == max(ns))
                record(
                    name,
                    {
                        "n": n,
                        "feature": feature,
                        "centered": centered,
                        "last": args.last,
                        "ratio": args.ratio,
                    },
                    bbq,
                    tqa,
                    seconds,
                    editor,
                )


if __name__ == "__main__":
    main()
