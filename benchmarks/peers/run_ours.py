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

from _common import Run, Timer, build_parser

from spectral_edit.editors.baselines.mean_diff import MeanDifferenceEditor
from spectral_edit.editors.baselines.pca_vector import PCAVectorEditor
from spectral_edit.hf.capture import capture
from spectral_edit.hf.layers import find_decoder_layers

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
    run = Run.start(parser.parse_known_args(argv)[0].method, parser, argv)
    model, tokenizer, layers = run.model, run.tokenizer, run.layers
    with Timer() as fit:
        pos = capture(model, tokenizer, [p for p, _ in run.pairs], layers=layers)
        neg = capture(model, tokenizer, [n for _, n in run.pairs], layers=layers)
        editor = EDITORS[run.args.method].fit(
            pos, neg, layers=layers, num_layers=len(find_decoder_layers(model))
        )
    print(f"[{run.tag}] fit {fit.seconds:.1f} s")
    rows = run.sweep(lambda strength: editor.with_options(alpha=strength).apply(model))
    description = {
        "peer": f"spectral_edit {run.args.method}",
        "method": f"capture(token='last') + {EDITORS[run.args.method].__name__}.fit + "
        "with_options(alpha=strength).apply(model)",
        **vector_info(editor),
    }
    return run.finish(rows, fit.seconds, [], description)


if __name__ == "__main__":
    sys.exit(main())
