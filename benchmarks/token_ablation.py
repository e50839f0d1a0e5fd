#!/usr/bin/env python
"""The paper's token-selection ablation: SEA fitted on the activation of the answer's last
token, on the mean over the answer's tokens, or on one seeded random answer token, each
scored on TruthfulQA MC1/MC2 with its harm (KL(edited ‖ unedited) per token on neutral
text).

The three fits share every other option (``--layers``, centring, energy ratio: by
default the truthfulness editor of the joint study, :data:`~spectral_edit.experiments.
joint_study.TRUTH_OPTIONS`) and the demonstrations (``--demos``, e.g. ``sea demos
halueval --limit 100 --out runs/halu100.jsonl``; none of them is a TruthfulQA item, so
every question scored is held out). Resumable in ``--out`` (the one resumable store:
each editor and each setting's scores are reused by a rerun with the same options);
writes ``report.json`` and ``report.md`` there. Example (CPU, Gemma 3 270M, ~15 min)::

    python benchmarks/token_ablation.py --demos runs/halu100.jsonl --out runs/token-ablation \\
        --tqa-limit 200 --kl-texts 40
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spectral_edit import load_model, read_demos
from spectral_edit.core.options import Token
from spectral_edit.data.splits import truthfulqa_questions
from spectral_edit.editors.sea import SpectralEditor
from spectral_edit.evaluate.kl import build_kl_reference, measure_kl
from spectral_edit.evaluate.truthfulqa import evaluate_truthfulqa
from spectral_edit.experiments.joint_study import TRUTH_OPTIONS
from spectral_edit.experiments.pipeline import demos_file_metadata, fit_editor
from spectral_edit.experiments.store import Store, content_key, model_key
from spectral_edit.experiments.tune import load_kl_texts
from spectral_edit.util.atomic import atomic_write_text
from spectral_edit.util.report import markdown_table, write_json

HEADERS = ["token", "MC1", "MC2", "ΔMC1", "ΔMC2", "KL mean", "KL p95", "k+ / k− (mean)"]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--demos", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--tqa-limit", type=int, default=200, help="first N questions")
    parser.add_argument("--kl-texts", type=int, default=40, help="neutral texts for KL")
    parser.add_argument("--layers", default=TRUTH_OPTIONS.layers)
    parser.add_argument("--ratio", type=float, default=TRUTH_OPTIONS.pos_ratio)
    parser.add_argument("--token-seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)

    model, tokenizer = load_model(args.model)
    demos = read_demos(args.demos)
    questions = truthfulqa_questions(data_dir=args.data_dir, limit=args.tqa_limit)
    texts = load_kl_texts(args.kl_texts, args.data_dir)
    base = TRUTH_OPTIONS.replace(
        layers=args.layers, pos_ratio=args.ratio, neg_ratio=args.ratio, token_seed=args.token_seed
    )
    common = {
        "model": model_key(model, args.model),
        "demos": demos_file_metadata(args.demos),
        "questions": content_key(q.question for q in questions),
        "kl_texts": content_key(texts),
    }
    with Store(args.out, print).exclusive("token-ablation") as store:
        reference = build_kl_reference(model, tokenizer, texts, batch_size=args.batch_size)
        results: dict[str, dict[str, Any]] = {}
        for token in (None, *Token):
            options = None if token is None else base.replace(token=token)
            name = "none" if token is None else str(token)
            editor = None
            if options is not None:
                editor = _fitted(store, model, tokenizer, demos, options, common, args.batch_size)

            def score(editor: SpectralEditor | None = editor) -> dict[str, Any]:
                with editor.apply(model) if editor else contextlib.nullcontext():
                    tqa = evaluate_truthfulqa(
                        model, tokenizer, questions, batch_size=2 * args.batch_size
                    )
                kl = measure_kl(model, reference, editor).summary
                return {
                    **{k: tqa.summary[k] for k in ("n", "mc1", "mc2", "seconds")},
                    "kl_mean": kl["kl_mean"],
                    "kl_p95": kl["kl_p95"],
                    "ranks": None if editor is None else _mean_ranks(editor),
                }

            key = {**common, "options": None if options is None else options.to_json()}
            results[name] = store.run(f"eval_{name}", key, score)
        report = {
            "model": args.model,
            "n_questions": len(questions),
            "n_demonstrations": len(demos),
            "options": base.to_json(),
            "headers": HEADERS,
            "rows": [_row(name, r, results["none"]) for name, r in results.items()],
            "results": results,
        }
        write_json(store.path("report.json"), report)
        atomic_write_text(store.path("report.md"), _markdown(report))
    print(Path(store.path("report.md")).read_text())


def _fitted(store, model, tokenizer, demos, options, common, batch_size) -> SpectralEditor:
    """The SEA editor of ``options`` (stored as ``<token>.safetensors``)."""

    def make() -> tuple[Any, dict[str, Any]]:
        editor = fit_editor(model, tokenizer, demos, options, batch_size=batch_size)
        return editor.save, {"token": str(options.token)}

    def load(path: Path) -> SpectralEditor:
        return SpectralEditor.load(path, model)

    name = str(options.token)
    key = {**common, "options": options.to_json()}
    editor, _ = store.artifact(f"fit_{name}", key, f"{name}.safetensors", load, make)
    return editor


def _mean_ranks(editor: SpectralEditor) -> list[float]:
    pos, neg = zip(*editor.ranks.values(), strict=True)
    return [round(sum(pos) / len(pos), 1), round(sum(neg) / len(neg), 1)]


def _row(name: str, result: dict[str, Any], none: dict[str, Any]) -> list[Any]:
    ranks = result["ranks"]
    return [
        name,
        result["mc1"],
        result["mc2"],
        round(result["mc1"] - none["mc1"], 2),
        round(result["mc2"] - none["mc2"], 2),
        result["kl_mean"],
        result["kl_p95"],
        "" if ranks is None else f"{ranks[0]} / {ranks[1]}",
    ]


def _markdown(report: dict[str, Any]) -> str:
    o = report["options"]
    return "\n".join(
        [
            f"# Token selection ablation ({report['model']})",
            "",
            f"TruthfulQA: first {report['n_questions']} questions of mc_task_v0.json "
            f"(all held out); {report['n_demonstrations']} HaluEval demonstrations; "
            f"SEA layers {o['layers']}, {'centred' if o['centered'] else 'uncentred'}, "
            f"r = {o['pos_ratio']}, neutral {o['neutral']}, random-token seed "
            f"{o['token_seed']}. KL(edited ‖ unedited) in nats per token on neutral text.",
            "",
            markdown_table(report["headers"], report["rows"]),
        ]
    )


if __name__ == "__main__":
    main()
