#!/usr/bin/env python
"""Issue-3 experiment: HaluEval demonstrations → SEA → TruthfulQA, with fold-based selection.

Captures the demonstrations' activations once (all layers, neutral = the model's greedy
answer, and neutral = last prompt token for the ablation), then fits and evaluates a grid
of editors (N demonstrations × layers × energy ratios × centring) on every TruthfulQA
question (mc_task_v0.json). Each configuration's per-question MC1/MC2/MC3 are appended to
``grid.jsonl`` as soon as they exist, so an interrupted run keeps what it finished and a
rerun skips finished configurations. Selection on fold 1 / report on fold 2 (and the
reverse) is done by ``benchmarks/summarize_grid.py`` from that file.

    python benchmarks/truthfulness_grid.py --model gemma-3-270m --out runs/grid \\
        --data-dir ../shared/data --budget 600
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from spectral_edit.builders import halueval_demos
from spectral_edit.capture import capture
from spectral_edit.data import load_halueval_qa, load_mc_task, resolve
from spectral_edit.demos import DemoActivations, capture_demos
from spectral_edit.evaluate.truthfulqa import evaluate_truthfulqa
from spectral_edit.fit import SpectralFitter
from spectral_edit.layers import find_decoder_layers
from spectral_edit.models import load_model


def _demos(data_dir: str, n_max: int):
    one = load_halueval_qa(resolve("halueval/qa_one-turn_data.json", data_dir))
    demos = halueval_demos(one, limit=min(n_max, len(one)))
    if n_max > len(one):
        multi = load_halueval_qa(resolve("halueval/qa_multi-turn_data.json", data_dir))
        demos += halueval_demos(multi, limit=n_max - len(one))
    return demos


def _subset(acts: DemoActivations, n: int, layers: list[int]) -> DemoActivations:
    index = [acts.layers.index(layer) for layer in layers]
    return DemoActivations(
        acts.neutral[:n, index], acts.positive[:n, index], acts.negative[:n, index], tuple(layers)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument(
        "--budget", type=float, default=600, help="seconds; no new configuration starts after this"
    )
    parser.add_argument(
        "--acts",
        type=Path,
        default=None,
        help="activation cache (default: OUT/activations.safetensors)",
    )
    parser.add_argument("--n", default="25,100,500,1000")
    parser.add_argument("--layers", default="2,4,8,18", help="last-L values")
    parser.add_argument("--ratios", default="0.99,0.995,0.999")
    parser.add_argument("--limit", type=int, default=None, help="questions (for smoke tests)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--gen-batch-size", type=int, default=64)
    args = parser.parse_args()
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    grid_path = args.out / "grid.jsonl"
    done = set()
    if grid_path.exists():
        done = {json.loads(line)["name"] for line in grid_path.read_text().splitlines() if line}

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_model(args.model)
    model.to(device)
    n_layers = len(find_decoder_layers(model))
    questions = load_mc_task(resolve("truthfulqa/mc_task_v0.json", args.data_dir))
    questions = questions[: args.limit] if args.limit else questions
    ns = [int(x) for x in args.n.split(",")]
    demos = _demos(args.data_dir, max(ns))
    ns = [n for n in ns if n <= len(demos)]

    def record(name: str, options: dict, result, seconds: float, editor=None) -> None:
        row = {
            "name": name,
            "options": options,
            "summary": result.summary,
            "seconds": seconds,
            "mc1": [q["mc1"] for q in result.per_question],
            "mc2": [q["mc2"] for q in result.per_question],
            "mc3": [q["mc3"] for q in result.per_question],
        }
        if editor is not None:
            row["ranks"] = {str(k): list(editor.ranks[k]) for k in editor.active_layers}
        with grid_path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(
            f"[{time.perf_counter() - start:6.0f}s] {name}: MC1 {result.summary['mc1']:.1f} "
            f"MC2 {result.summary['mc2']:.1f} MC3 {result.summary['mc3']:.1f} "
            f"({seconds:.1f}s)",
            flush=True,
        )

    def evaluate(editor=None):
        t0 = time.perf_counter()
        if editor is None:
            result = evaluate_truthfulqa(model, tokenizer, questions, batch_size=args.batch_size)
        else:
            with editor.apply(model):
                result = evaluate_truthfulqa(
                    model, tokenizer, questions, batch_size=args.batch_size
                )
        return result, time.perf_counter() - t0

    if "unedited" not in done:
        result, seconds = evaluate()
        record("unedited", {}, result, seconds)
        (args.out / "questions.json").write_text(json.dumps([q.question for q in questions]))

    all_layers = list(range(n_layers))
    path = args.acts or args.out / "activations.safetensors"
    t0 = time.perf_counter()
    if path.exists():
        saved = load_file(str(path))
    else:
        generated = capture_demos(
            model,
            tokenizer,
            demos,
            layers=all_layers,
            neutral="generate",
            batch_size=args.gen_batch_size,
        )
        prompt_last = capture(
            model,
            tokenizer,
            [d.prompt for d in demos],
            layers=all_layers,
            batch_size=args.gen_batch_size,
        )
        saved = {
            "neutral": generated.neutral,
            "positive": generated.positive,
            "negative": generated.negative,
            "neutral_prompt": prompt_last,
        }
        save_file(saved, str(path))
    acts = {
        "generate": DemoActivations(
            saved["neutral"], saved["positive"], saved["negative"], tuple(all_layers)
        ),
        "prompt": DemoActivations(
            saved["neutral_prompt"], saved["positive"], saved["negative"], tuple(all_layers)
        ),
    }
    print(f"activations ({len(demos)} demos): {time.perf_counter() - t0:.1f}s", flush=True)

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

    configs = []
    last_ls = [int(x) for x in args.layers.split(",")]
    ratios = [float(x) for x in args.ratios.split(",")]
    # most informative first: N = 100 (the paper's small regime), then the rest
    for n in sorted(ns, key=lambda v: (v != 100, v)):
        for centered, last, ratio in itertools.product((True, False), last_ls, ratios):
            configs.append(
                {
                    "n": n,
                    "last": last,
                    "ratio": ratio,
                    "centered": centered,
                    "neutral": "generate",
                    "merge": "norm",
                }
            )
    best_guess = {"n": min(100, max(ns)), "last": 8, "ratio": 0.99, "centered": True}
    for variant in ({"neutral": "prompt"}, {"merge": "mean"}):
        configs.insert(
            len(last_ls) * len(ratios) * 2,
            {**best_guess, "neutral": "generate", "merge": "norm", **variant},
        )
    for config in configs:
        name = "sea n={n} last-{last} r={ratio} {c} neutral={neutral} merge={merge}".format(
            c="centred" if config["centered"] else "uncentred", **config
        )
        if name in done:
            continue
        if time.perf_counter() - start > args.budget:
            print(f"budget reached; stopping before {name}", flush=True)
            break
        editor = editor_for(config)
        result, seconds = evaluate(editor)
        record(name, config, result, seconds, editor)


if __name__ == "__main__":
    main()
