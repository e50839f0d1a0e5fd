#!/usr/bin/env python
"""Issue-4 experiment: BBQ demonstrations → SEA and Φ-SEA → held-out BBQ (+ TruthfulQA).

Demonstrations are disambiguated items of the official BBQ category files, drawn by
template (no evaluation item shares a template with a demonstration; N = 25 and 100 are
prefixes of the N = 1000 draw, and all N are evaluated on the same held-out items, a
stratified sample of up to ``--per-cell`` items per category × context condition).
For each N, feature map (linear, tanh, elu, squared-exponential) and centring, an editor
is fitted on the last ``--last`` layers and evaluated; rows are appended to
``bias.jsonl`` as they finish (rows of the project's one store,
:mod:`spectral_edit.experiments.store`; a rerun skips finished rows).

``--split-n`` fixes the demonstration draw and the held-out items independently of
``--n``, so that a later run of only some N (``--n 25,100``) evaluates the same items as
the full run; ``--shard i/k`` splits the settings between k processes sharing ``--out``
(the activations are captured once, under a file lock, and reused by any run of the same
split that needs no more demonstrations than they hold).
"""

from __future__ import annotations

import argparse
import random
import time
from collections import defaultdict
from pathlib import Path

import torch

from spectral_edit.core.options import SeaOptions
from spectral_edit.data.splits import bbq_split, truthfulqa_questions
from spectral_edit.demos.activations import DemoActivations, capture_demos
from spectral_edit.demos.builders import bbq_demos
from spectral_edit.editors.sea_fit import default_feature_scales
from spectral_edit.evaluate.bbq import evaluate_bbq
from spectral_edit.evaluate.truthfulqa import evaluate_truthfulqa
from spectral_edit.experiments.pipeline import fit_from_activations
from spectral_edit.experiments.store import Store
from spectral_edit.hf.layers import find_decoder_layers
from spectral_edit.hf.models import load_model

ROWS = "bias"
"""The rows in the output folder's store: ``bias.jsonl``."""
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
    parser.add_argument(
        "--budget", type=float, default=600, help="seconds; no new evaluation starts after this"
    )
    parser.add_argument("--n", default="25,100,1000")
    parser.add_argument(
        "--split-n",
        type=int,
        default=None,
        help="demonstrations the held-out split reserves (default: the largest --n)",
    )
    parser.add_argument("--features", default=",".join(FEATURES))
    parser.add_argument("--centering", choices=("both", "centred", "uncentred"), default="both")
    parser.add_argument(
        "--tqa-n",
        default=None,
        help="N whose editors (and the unedited model) are also scored on TruthfulQA: "
        "comma-separated, or none (default: the largest --n)",
    )
    parser.add_argument("--last", type=int, default=2)
    parser.add_argument("--ratio", type=float, default=0.99)
    parser.add_argument(
        "--scale-factor",
        type=float,
        default=1.0,
        help="Φ-SEA scales = this × each layer's neutral RMS (1: the default scales)",
    )
    parser.add_argument("--per-cell", type=int, default=300)
    parser.add_argument("--tqa-limit", type=int, default=None)
    parser.add_argument(
        "--shard", default="0/1", help="i/k: this process does settings i, i+k, ..."
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--gen-batch-size", type=int, default=64)
    args = parser.parse_args()
    start = time.perf_counter()
    shard, shards = (int(x) for x in args.shard.split("/"))
    store = Store(args.out)

    def finished() -> dict[str, bool]:
        """Setting name → whether it has its TruthfulQA scores (in any of its rows)."""
        done: dict[str, bool] = {}
        for row in store.rows(ROWS, locked=True):
            done[row["name"]] = done.get(row["name"], False) or row.get("truthfulqa") is not None
        return done

    ns = sorted(int(x) for x in args.n.split(","))
    split_n = args.split_n or max(ns)
    if max(ns) > split_n:
        raise SystemExit(f"--n {max(ns)} is larger than --split-n {split_n}")
    if args.tqa_n is None:
        tqa_ns = {max(ns)}
    else:  # "none": no TruthfulQA, not even for the unedited model
        tqa_ns = {int(x) for x in args.tqa_n.split(",")} if args.tqa_n != "none" else set()
    features = args.features.split(",")
    unknown = sorted(set(features) - set(FEATURES))
    if unknown:
        raise SystemExit(f"--features: unknown {unknown}; choose from {FEATURES}")
    centerings = {"both": (False, True), "centred": (True,), "uncentred": (False,)}[args.centering]

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_model(args.model)
    model.to(device)
    n_layers = len(find_decoder_layers(model))
    demo_items, held_out = bbq_split(split_n, 0, args.data_dir)  # (N, seed): see the key below
    eval_items = _stratified(held_out, args.per_cell, seed=0)
    demos = bbq_demos(demo_items)[: max(ns)]
    questions = truthfulqa_questions("mc_task_v0.json", args.data_dir, limit=args.tqa_limit or None)
    print(
        f"BBQ: {len(demo_items)} demonstrations reserved, {len(demos)} used; "
        f"{len(held_out)} held out; {len(eval_items)} evaluated",
        flush=True,
    )

    def record(name, options, bbq, tqa, seconds, editor=None):
        row = {
            "name": name,
            "options": options,
            "bbq": bbq.summary,
            "seconds": seconds,
            "device": device,
            "split_n": split_n,
            "truthfulqa": None if tqa is None else tqa.summary,
        }
        if editor is not None:
            row["ranks"] = {str(k): list(v) for k, v in editor.ranks.items()}
        store.append(ROWS, row)
        overall = bbq.summary["overall"]
        print(
            f"[{time.perf_counter() - start:5.0f}s] {name}: "
            f"acc amb {overall['ambig']['accuracy']:.1f} dis {overall['disambig']['accuracy']:.1f}"
            f" bias amb {overall['ambig']['bias_score']} dis {overall['disambig']['bias_score']}"
            + (
                ""
                if tqa is None
                else f" | TQA MC1 {tqa.summary['mc1']:.1f} MC2 {tqa.summary['mc2']:.1f}"
            )
            + f" ({seconds:.0f}s)",
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

    settings: list[tuple[str, dict | None]] = [("unedited", None)]  # stays first
    for n in sorted(ns, reverse=True):
        for feature in features:
            for centered in centerings:
                name = f"{feature} n={n} last-{args.last} r={args.ratio} " + (
                    "centred" if centered else "uncentred"
                )
                if args.scale_factor != 1 and feature != "linear":
                    name += f" scale={args.scale_factor:g}×rms"
                options = {
                    "n": n,
                    "feature": feature,
                    "centered": centered,
                    "last": args.last,
                    "ratio": args.ratio,
                    "scale_factor": args.scale_factor,
                }
                settings.append((name, options))
    done = finished()
    # a setting is due if it has no row, or lacks TruthfulQA that --tqa-n now asks for
    # (then only TruthfulQA runs, and a supplementary row records it)
    todo = [
        (name, options)
        for name, options in settings[shard::shards]
        if name not in done or (options is not None and options["n"] in tqa_ns and not done[name])
    ]
    if todo and todo[0][1] is None:  # the unedited model first: it needs no activations
        bbq, tqa, seconds = run(None, bool(tqa_ns))
        record("unedited", {}, bbq, tqa, seconds)
        todo = todo[1:]
    if not todo:
        return
    layers = list(range(n_layers - args.last, n_layers))
    # the demonstrations are prefixes of the split's draw: a file holding at least as many
    # of them (captured for a larger --n) serves
    name = f"activations-split{split_n}-last{args.last}"
    key = {"model": args.model, "split": [split_n, 0], "layers": layers, "neutral": "generate"}
    t0 = time.perf_counter()
    with store.lock(name):  # one process captures; the others wait and load
        found = store.get_tensors(name, key)
        if found is None or len(found[0]["neutral"]) < len(demos):
            acts = capture_demos(
                model,
                tokenizer,
                demos,
                layers=layers,
                neutral="generate",
                batch_size=args.gen_batch_size,
                progress=True,
            )
            saved = {"neutral": acts.neutral, "positive": acts.positive, "negative": acts.negative}
            store.put_tensors(name, key, saved)
        else:
            saved = found[0]
    acts = DemoActivations(saved["neutral"], saved["positive"], saved["negative"], tuple(layers))
    print(f"activations: {time.perf_counter() - t0:.1f}s", flush=True)
    for name, options in todo:
        if time.perf_counter() - start > args.budget:
            print(f"budget reached before {name}", flush=True)
            return
        n = options["n"]
        sub = DemoActivations(acts.neutral[:n], acts.positive[:n], acts.negative[:n], acts.layers)
        editor = fit_from_activations(
            sub,
            n_layers,
            SeaOptions(
                pos_ratio=args.ratio,
                neg_ratio=args.ratio,
                centered=options["centered"],
                feature=options["feature"],
                feature_scales=None
                if options["feature"] == "linear"
                else [args.scale_factor * x for x in default_feature_scales(sub.neutral)],
            ),
        )
        if name in done:  # BBQ is in an earlier row: TruthfulQA only
            t0 = time.perf_counter()
            with editor.apply(model):
                tqa = evaluate_truthfulqa(model, tokenizer, questions, batch_size=args.batch_size)
            row = {
                "name": name,
                "options": options,
                "supplement": "truthfulqa",
                "truthfulqa": tqa.summary,
                "seconds": time.perf_counter() - t0,
                "device": device,
            }
            store.append(ROWS, row)
            print(
                f"[{time.perf_counter() - start:5.0f}s] {name}: TQA MC1 {tqa.summary['mc1']:.1f} "
                f"MC2 {tqa.summary['mc2']:.1f} ({row['seconds']:.0f}s)",
                flush=True,
            )
            continue
        bbq, tqa, seconds = run(editor, with_tqa=n in tqa_ns)
        record(name, options, bbq, tqa, seconds, editor)


if __name__ == "__main__":
    main()
