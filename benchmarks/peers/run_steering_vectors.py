"""TruthfulQA MC1/MC2/MC3 of ``steering-vectors`` (0.12.2) steering, scored by our scorer.

Run with the steering-vectors virtualenv (``setup_peer_envs.sh``)::

    /work/venv-peer-sv/bin/python benchmarks/peers/run_steering_vectors.py \\
        --model MODEL_DIR --demos spectral_edit/resources/truthful_demos.jsonl \\
        --data-dir /work/shared/data --layers 10,11,12,13,14,15,16,17 \\
        --strength 0 1 --fold 1 --limit 20 --out runs/peers/sv.json

Fit: ``train_steering_vector(model, tokenizer, [(pos_text, neg_text), ...], layers=...,
read_token_index=-1)`` with the default ``mean_aggregator`` -- per layer the mean over pairs
of ``h+ - h-`` of the decoder block's output at the last token, i.e. the same vector as our
mean-difference baseline. Apply: ``vector.apply(model, multiplier=S)`` adds ``S * v_l`` to
every token's decoder-block output (a forward hook), so ``--strength`` is on the same scale
as our mean-difference ``alpha``. The package's hooks stay on the decoder blocks, which our
scorer runs through ``model.base_model``; the strength-0 and non-zero checks in the result
file confirm it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from _common import Run, Timer, build_parser
from steering_vectors import train_steering_vector


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(
        __doc__.splitlines()[0],
        "multiplier(s) of the mean-difference vector (0 = unedited), e.g. 0 0.5 1 2",
    )
    run = Run.start("sv", parser, argv)
    with Timer() as fit:
        vector = train_steering_vector(
            run.model,
            run.tokenizer,
            run.pairs,
            layers=run.layers,
            read_token_index=-1,
            batch_size=run.args.fit_batch_size,
        )
    print(f"[sv] fit {fit.seconds:.1f} s")
    rows = run.sweep(lambda strength: vector.apply(run.model, multiplier=strength))
    description = {
        "peer": "steering-vectors",
        "method": "train_steering_vector (mean_aggregator, read_token_index=-1, "
        "layer_type=decoder_block) + SteeringVector.apply(multiplier=strength)",
        "strength_meaning": "multiplier of the per-layer mean difference mean(h+ - h-), "
        "added to every token's decoder-block output (= our mean-diff alpha)",
        "vector_norms": {
            str(k): float(v.norm()) for k, v in sorted(vector.layer_activations.items())
        },
    }
    return run.finish(rows, fit.seconds, ["steering-vectors"], description)


if __name__ == "__main__":
    sys.exit(main())
