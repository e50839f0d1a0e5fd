"""Generation columns for a ``sea tune`` report: each method's chosen setting, rebuilt from
the tune folder's stored activations (and prepared editors), scored on TruthfulQA
generation (lm-eval ``truthfulqa_gen`` BLEU/ROUGE acc, informativeness) over the first
held-out questions and on free generation (repeated 4-grams, distinct-2, fluency).

Usage::

    python benchmarks/tune_generation.py runs/tune-gemma [--questions 8] [--prompts 5]
        [--gen-tokens 40] [--first-config]

Writes ``TUNE_DIR/generation.json`` (one entry per method, plus ``none``); every method's
result is stored as it finishes (the one store), so a rerun resumes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from spectral_edit.data.splits import truthfulqa_rows
from spectral_edit.demos.activations import DemoActivations
from spectral_edit.evaluate.harm import (
    OPEN_PROMPTS,
    build_harm_reference,
    evaluate_harm,
    harm_prompts,
    neutral_texts,
)
from spectral_edit.evaluate.truthfulqa_gen import evaluate_truthfulqa_gen
from spectral_edit.experiments.methods import METHODS, FitContext
from spectral_edit.experiments.store import Store
from spectral_edit.experiments.tune import TUNE_CONFIGS
from spectral_edit.experiments.tune_targets import load_tune_data
from spectral_edit.hf.models import load_model
from spectral_edit.util.report import write_json

GEN_KEYS = ("bleu_acc", "rouge1_acc", "rougeL_acc", "info")
HARM_KEYS = ("repeat4", "distinct2", "fluency_ppl", "unedited_repeat4")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tune_dir", type=Path)
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=5)
    parser.add_argument("--gen-tokens", type=int, default=40)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--n-demos", type=int, default=100, help="as given to sea tune")
    args = parser.parse_args()

    report = json.loads((args.tune_dir / "report.json").read_text())
    options = report["options"]
    model, tokenizer = load_model(report["model"])
    data = load_tune_data(
        "truthfulqa",
        n_demos=args.n_demos,
        per_fold=args.questions,
        data_dir=args.data_dir,
        seed=options.get("seed", 0),
    )
    ctx = FitContext(model, tokenizer, data.demos, neutral=options["neutral"])
    tensors = load_file(str(args.tune_dir / "activations.safetensors"))
    layers = tuple(range(tensors["positive"].shape[1]))
    ctx.captured = DemoActivations(
        tensors["neutral"], tensors["positive"], tensors["negative"], layers
    )
    rows = truthfulqa_rows(args.data_dir, fold=2, limit=args.questions)
    qa = [r.question for r in rows[: args.prompts]]
    reference = build_harm_reference(
        model,
        tokenizer,
        texts=neutral_texts(args.data_dir, limit=2),
        prompts=harm_prompts(qa, OPEN_PROMPTS[: args.prompts]),
        gen_tokens=args.gen_tokens,
    )
    store = Store(args.tune_dir / "generation", print)

    def measure(name: str, editor: Any, alpha: float | None) -> dict[str, Any]:
        key = {"method": name, "alpha": alpha, **vars(args) | {"tune_dir": str(args.tune_dir)}}

        def compute() -> dict[str, Any]:
            if editor is None:
                gen = evaluate_truthfulqa_gen(
                    model, tokenizer, rows, max_new_tokens=args.gen_tokens
                )
            else:
                with editor.apply(model):
                    gen = evaluate_truthfulqa_gen(
                        model, tokenizer, rows, max_new_tokens=args.gen_tokens
                    )
            harm = evaluate_harm(model, tokenizer, editor, reference)
            return {
                "truthfulqa_gen": {k: gen.summary[k] for k in GEN_KEYS},
                "generation": {k: harm.summary[k] for k in HARM_KEYS},
                "samples": [
                    {k: r[k] for k in ("prompt", "unedited", "edited")} for r in harm.records[-2:]
                ],
            }

        return store.run(f"{name}--{alpha}", key, compute)

    out: dict[str, Any] = {"none": measure("none", None, None)}
    for name, result in report["methods"].items():
        if result.get("alpha") is None:
            continue
        spec = METHODS[name]
        config = next(c for c in TUNE_CONFIGS[name] if _config_id(c) == result["chosen"])
        prepared = args.tune_dir / "units" / name / "prepared.safetensors"
        state = spec.load_state(prepared) if spec.load_state and prepared.exists() else None
        if spec.load_state and state is None:
            state = spec.prepare(ctx)
        editor = spec.configure(state, config, ctx).editor.with_options(alpha=result["alpha"])
        out[name] = measure(name, editor, result["alpha"])
    write_json(args.tune_dir / "generation.json", out)
    print(
        json.dumps(
            {k: {**v["truthfulqa_gen"], **v["generation"]} for k, v in out.items()}, indent=1
        )
    )


def _config_id(config: Any) -> str:
    from spectral_edit.experiments.settings import setting_id

    return setting_id(config)


if __name__ == "__main__":
    main()
