"""Why does SEA cost this model general ability? Edit variants on the tuning fold, the best
ones confirmed on the held-out fold (issue #12, part 3).

Every variant is the ``sea compare`` SEA choice (linear, centred covariances, last 8 layers,
energy ratio 0.99, 100 HaluEval demonstrations) with one thing changed: the centred edit,
the positions edited, the merge, the layers, the ranks, the strength. Each is scored on
TruthfulQA (MC1/MC2/MC3), the control tasks and the KL on neutral text; the
activations, every editor's scores and the KL reference are kept in the one store, so a
rerun resumes. A diagnostic pass records, on the neutral texts, how much of each token's
energy lies in the neutral mean and in the kept positive subspace before and after the
edit (the merge ``z = h + P+h − Q−h`` counts the kept subspace twice before rescaling).

Usage (CPU, about an hour with the defaults)::

    python benchmarks/harm_cause.py --out runs/harm-cause [--per-fold 40] [--control-limit 25]
        [--kl-texts 16] [--confirm paper,center,...]

Writes ``OUT/report.json`` and ``OUT/report.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from spectral_edit.core.options import Merge, Positions, SeaOptions
from spectral_edit.data.control import DEFAULT_CONTROL_TASKS
from spectral_edit.data.splits import truthfulqa_folds
from spectral_edit.demos.activations import DemoActivations
from spectral_edit.editors.sea import SpectralEditor
from spectral_edit.evaluate.control import evaluate_control
from spectral_edit.evaluate.truthfulqa import evaluate_truthfulqa
from spectral_edit.experiments.demo_job import load_truthfulness_demos
from spectral_edit.experiments.methods import FitContext
from spectral_edit.experiments.pipeline import fit_from_activations
from spectral_edit.experiments.store import Store, options_key
from spectral_edit.hf.heads import decoder_and_head
from spectral_edit.hf.hooks import hooked
from spectral_edit.hf.layers import site_modules
from spectral_edit.hf.models import load_model
from spectral_edit.hf.tokens import encode
from spectral_edit.util.report import markdown_table, write_json

BASE = SeaOptions(layers="last-8", pos_ratio=0.99, neg_ratio=0.99, centered=True)
"""``sea compare``'s SEA choice on fold 1 (benchmarks/results/compare_gemma)."""

VARIANTS: dict[str, tuple[str, SeaOptions, dict[str, Any]]] = {
    # id: (what changes, fit options, editor.with_options changes)
    "paper": ("the paper's edit (every position, raw h, norm merge)", BASE, {}),
    "center": ("centred edit μ + P±(h − μ)", BASE, {"center_edit": True}),
    "answer": ("edit from the prompt's last token on", BASE, {"positions": Positions.ANSWER}),
    "generated": ("edit only after the prompt", BASE, {"positions": Positions.GENERATED}),
    "center+answer": (
        "centred, from the prompt's last token on",
        BASE,
        {"center_edit": True, "positions": Positions.ANSWER},
    ),
    "merge-mean": ("merge (P+h + P−h)/2, no rescaling", BASE, {"merge": Merge.MEAN}),
    "last-4": ("last 4 layers", BASE.replace(layers="last-4"), {}),
    "last-2": ("last 2 layers", BASE.replace(layers="last-2"), {}),
    "ratio-0.9": (
        "energy ratio 0.9 (smaller ranks)",
        BASE.replace(pos_ratio=0.9, neg_ratio=0.9),
        {},
    ),
    "rank-64": ("ranks capped at 64", BASE.replace(pos_rank=64, neg_rank=64), {}),
    "alpha-0.5": ("α = 0.5", BASE, {"alpha": 0.5}),
}


def _editor(ctx: FitContext, options: SeaOptions, changes: dict[str, Any]) -> SpectralEditor:
    return fit_from_activations(
        ctx.subset(str(options.layers)), ctx.num_layers, options
    ).with_options(**changes)


def _energy_diagnostics(
    model, tokenizer, editor: SpectralEditor, texts: list[str]
) -> dict[str, Any]:
    """Per edited layer, averaged over the neutral texts' tokens: the share of ‖h‖² in the
    neutral mean direction, in the kept positive subspace (‖U+ᵀh‖²/‖h‖²) and in the
    removed negative one, before the edit and after it (on the same input activations),
    and the cosine between h and the edited h."""
    layers = list(editor.active_layers)
    recorded: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}

    def record(layer: int, hidden: torch.Tensor) -> None:
        recorded[layer].append(hidden[0].detach().double())

    modules = site_modules(model, layers, editor.site, editor.layer_path)
    base, _ = decoder_and_head(model)
    with torch.no_grad(), hooked(modules, record):
        for text in texts:
            ids = torch.tensor([encode(tokenizer, text)[:128]])
            base(input_ids=ids)
    out: dict[str, Any] = {}
    for layer in layers:
        h = torch.cat(recorded[layer])
        pos, neg = (f.double() for f in editor.factors(layer))
        mean = editor.mean(layer)
        edited = editor.with_options(alpha=1.0).edit(h.float(), layer).double()

        def shares(
            x: torch.Tensor,
            pos: torch.Tensor = pos,
            neg: torch.Tensor = neg,
            mean: torch.Tensor | None = mean,
        ) -> dict[str, float]:
            energy = x.square().sum(-1)
            row = {
                "positive": float(((x @ pos).square().sum(-1) / energy).mean()),
                "negative": float(((x @ neg).square().sum(-1) / energy).mean()),
            }
            if mean is not None:
                unit = mean.double() / mean.double().norm()
                row["mean_direction"] = float(((x @ unit).square() / energy).mean())
            return row

        out[str(layer)] = {
            "before": shares(h),
            "after": shares(edited),
            "cosine": float(torch.nn.functional.cosine_similarity(h, edited, dim=-1).mean()),
            "norm_ratio": float((edited.norm(dim=-1) / h.norm(dim=-1)).mean()),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/harm-cause"))
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--n-demos", type=int, default=100)
    parser.add_argument("--per-fold", type=int, default=40)
    parser.add_argument("--control-limit", type=int, default=25)
    parser.add_argument("--kl-texts", type=int, default=16)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--confirm", default="", help="variants to score on the held-out fold")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    from spectral_edit.evaluate.harm import neutral_texts
    from spectral_edit.evaluate.kl import build_kl_reference, measure_kl

    model, tokenizer = load_model(args.model)
    store = Store(args.out, print)
    demos = load_truthfulness_demos(args.n_demos, args.data_dir).demos
    folds = truthfulqa_folds("mc_task_v0.json", args.data_dir, per_fold=args.per_fold)
    ctx = FitContext(model, tokenizer, demos, neutral="prompt", batch_size=8)
    key = {
        "model": args.model,
        "demos": options_key({"d": [d.prompt for d in demos]}),
        "neutral": "prompt",
    }
    found = store.get_tensors("activations", key)
    if found is not None:
        tensors, _ = found
        ctx.captured = DemoActivations(**tensors, layers=tuple(range(tensors["positive"].shape[1])))
    else:
        acts = ctx.activations()
        store.put_tensors(
            "activations",
            key,
            {"neutral": acts.neutral, "positive": acts.positive, "negative": acts.negative},
            {"seconds": repr(ctx.capture_seconds)},
        )
    # the control items: tuning = the first n of each task, held-out = the next n
    texts = neutral_texts(args.data_dir, limit=2 * args.kl_texts)
    references = {
        "tune": build_kl_reference(model, tokenizer, texts[: args.kl_texts]),
        "test": build_kl_reference(model, tokenizer, texts[args.kl_texts :]),
    }

    def scores(
        editor: SpectralEditor | None, fold: int, split: str, vid: str, editor_key: Any = None
    ) -> dict[str, Any]:
        offset = 0 if split == "tune" else args.control_limit
        unit_key = {
            **key,
            "variant": vid,
            "fold": fold,
            "split": split,
            "q": args.per_fold,
            "control": args.control_limit,
            "kl_texts": args.kl_texts,
            "editor": editor_key,
        }

        def compute() -> dict[str, Any]:
            ctxm = editor.apply(model) if editor is not None else _null()
            with ctxm:
                tqa = evaluate_truthfulqa(model, tokenizer, folds[fold], batch_size=args.batch_size)
                control = evaluate_control(
                    model,
                    tokenizer,
                    list(DEFAULT_CONTROL_TASKS),
                    data_dir=args.data_dir,
                    limit=args.control_limit,
                    offset=offset,
                    batch_size=args.batch_size,
                )
            kl = measure_kl(model, references[split], editor)
            return {"truthfulqa": tqa.summary, "control": control.summary, "kl": kl.summary}

        return store.run(f"{vid}--fold{fold}", unit_key, compute)

    rows = {}
    unedited = scores(None, 1, "tune", "none")
    for vid in [v for v in args.variants.split(",") if v]:
        what, options, changes = VARIANTS[vid]
        editor = _editor(ctx, options, changes)
        editor_key = {
            "options": options.to_json(),
            "changes": {k: str(v) for k, v in changes.items()},
        }
        rows[vid] = {"what": what, "tune": scores(editor, 1, "tune", vid, editor_key)}
        diag_key = {**key, "variant": vid, "diag": args.kl_texts}
        rows[vid]["energy"] = store.run(
            f"{vid}--energy",
            diag_key,
            lambda e=editor: _energy_diagnostics(model, tokenizer, e, texts[: args.kl_texts]),
        )
    held = {"none": scores(None, 2, "test", "none")}
    for vid in [v for v in args.confirm.split(",") if v]:
        what, options, changes = VARIANTS[vid]
        editor_key = {
            "options": options.to_json(),
            "changes": {k: str(v) for k, v in changes.items()},
        }
        held[vid] = scores(_editor(ctx, options, changes), 2, "test", vid, editor_key)
    report = {
        "unedited_tune": unedited,
        "variants": rows,
        "held_out": held,
        "args": vars(args) | {"out": str(args.out)},
    }
    write_json(args.out / "report.json", report)
    headers = ["variant", "what", "MC1", "MC2", "MC3", "control avg", "KL mean", "KL p95"]
    table = [["unedited", "—", *_row(unedited)]]
    table += [[vid, row["what"], *_row(row["tune"])] for vid, row in rows.items()]
    held_table = [[vid, *_row(s)] for vid, s in held.items()]
    n, q = args.control_limit, args.per_fold
    text = (
        f"## Tuning fold (fold 1, {q} questions; control items 0..{n})\n\n"
        + markdown_table(headers, table)
        + f"\n\n## Held-out fold (fold 2, {q} questions; control items {n}..{2 * n})\n\n"
        + markdown_table(["variant", *headers[2:]], held_table)
        + "\n"
    )
    (args.out / "report.md").write_text(text)
    print(text)


def _row(s: dict[str, Any]) -> list[Any]:
    t, c, k = s["truthfulqa"], s["control"]["average"]["acc"], s["kl"]
    return [
        round(t["mc1"], 1),
        round(t["mc2"], 1),
        round(t["mc3"], 1),
        round(c, 1),
        round(k["kl_mean"], 3),
        round(k["kl_p95"], 3),
    ]


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    main()
