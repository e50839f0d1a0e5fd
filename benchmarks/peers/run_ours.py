"""Our mean-difference and PCA-vector baselines on exactly the peers' inputs, same output.

Runs in the project's own venv (transformers 5)::

    /work/venv/bin/python benchmarks/peers/run_ours.py --method mean-diff \\
        --model MODEL_DIR --demos spectral_edit/resources/truthful_demos.jsonl \\
        --data-dir /work/shared/data --layers 10,11,12,13,14,15,16,17 \\
        --strength 0 1 --fold 1 --limit 20 --out runs/peers/ours_mean_diff.json

Fit: our last-token ``capture`` of ``prompt + " " + answer`` at the decoder-block outputs,
then ``MeanDifferenceEditor.fit`` / ``PCAVectorEditor.fit``; apply:
``editor.with_options(alpha=strength).apply(model)``. The result file has the peers'
schema (``benchmarks/peers/_common.py``), so the rows can be put side by side:
steering-vectors ``multiplier`` = our mean-diff ``alpha``; repeng ``coeff`` = our PCA-vector
``alpha * s_l`` (see ``run_repeng.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from _common import (
    Timer,
    build_parser,
    checks,
    demo_pairs,
    evaluate,
    load_model,
    load_questions,
    parse_args,
    resolve_layers,
    run_info,
    sweep,
    versions,
    write_result,
)

from spectral_edit.baselines.mean_diff import MeanDifferenceEditor
from spectral_edit.baselines.pca_vector import PCAVectorEditor
from spectral_edit.capture import capture
from spectral_edit.layers import find_decoder_layers

EDITORS = {"mean-diff": MeanDifferenceEditor, "pca-vector": PCAVectorEditor}


def vector_info(editor: MeanDifferenceEditor | PCAVectorEditor) -> dict[str, dict[str, float]]:
    """Per layer: the norm of the shift added at ``alpha = 1`` (``vector_norms``) and, for
    the PCA vector, its signed scale ``s_l`` (``pca_scales``, comparable to repeng)."""
    if isinstance(editor, PCAVectorEditor):
        unit = editor.with_options(alpha=1.0)
        return {
            "vector_norms": {str(k): float(unit.vector(k).norm()) for k in editor.layers},
            "pca_scales": {
                str(k): float(s) for k, s in zip(editor.layers, editor.scales, strict=True)
            },
        }
    return {
        "vector_norms": {
            str(k): float(v.norm()) for k, v in zip(editor.layers, editor.vectors, strict=True)
        }
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(__doc__.splitlines()[0], "alpha value(s) (0 = unedited)")
    parser.add_argument("--method", choices=sorted(EDITORS), required=True)
    args = parse_args(parser, argv)
    with Timer() as load:
        model, tokenizer, shims = load_model(args.model, args.device)
    layers = resolve_layers(args.layers, model)
    pairs = demo_pairs(args.demos)
    questions = load_questions(args.data_dir, args.mc_file, args.fold, args.limit)
    print(f"[{args.method}] {len(pairs)} pairs, layers {layers}, {len(questions)} questions")

    unedited = evaluate(model, tokenizer, questions, args.batch_size)
    with Timer() as fit:
        pos = capture(model, tokenizer, [p for p, _ in pairs], layers=layers)
        neg = capture(model, tokenizer, [n for _, n in pairs], layers=layers)
        editor = EDITORS[args.method].fit(
            pos, neg, layers=layers, num_layers=len(find_decoder_layers(model))
        )
    print(f"[{args.method}] fit {fit.seconds:.1f} s")

    def steer(strength: float):
        return editor.with_options(alpha=strength).apply(model)

    rows = sweep(model, tokenizer, questions, args.strength, steer, unedited, args.batch_size)
    payload = {
        "peer": f"spectral_edit {args.method}",
        "method": f"capture(token='last') + {EDITORS[args.method].__name__}.fit + "
        "with_options(alpha=strength).apply(model)",
        "versions": versions([]),
        "config": run_info(args, layers, len(pairs)),
        "compat_shims": shims,
        "seconds": {
            "model_load": load.seconds,
            "fit": fit.seconds,
            "eval_unedited": unedited.summary["seconds"],
            "eval_per_strength": [row["eval_seconds"] for row in rows],
        },
        **vector_info(editor),
        "unedited": {k: unedited.summary[k] for k in ("mc1", "mc2", "mc3", "n")},
        "results": rows,
        "checks": checks(rows),
    }
    write_result(args.out, payload)
    print(f"[{args.method}] checks {payload['checks']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
