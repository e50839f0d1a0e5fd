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
from steering_vectors import train_steering_vector


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(
        __doc__.splitlines()[0],
        "multiplier(s) of the mean-difference vector (0 = unedited), e.g. 0 0.5 1 2",
    )
    args = parse_args(parser, argv)
    with Timer() as load:
        model, tokenizer, shims = load_model(args.model, args.device)
    layers = resolve_layers(args.layers, model)
    pairs = demo_pairs(args.demos)
    questions = load_questions(args.data_dir, args.mc_file, args.fold, args.limit)
    print(f"[sv] {len(pairs)} pairs, layers {layers}, {len(questions)} questions")

    unedited = evaluate(model, tokenizer, questions, args.batch_size)
    print(f"[sv] unedited: MC1 {unedited.summary['mc1']:.2f} MC2 {unedited.summary['mc2']:.2f}")
    with Timer() as fit:
        vector = train_steering_vector(
            model,
            tokenizer,
            pairs,
            layers=layers,
            read_token_index=-1,
            batch_size=args.fit_batch_size,
        )
    print(f"[sv] fit {fit.seconds:.1f} s")
    norms = {str(k): float(v.norm()) for k, v in sorted(vector.layer_activations.items())}

    def steer(strength: float):
        return vector.apply(model, multiplier=strength)

    rows = sweep(model, tokenizer, questions, args.strength, steer, unedited, args.batch_size)
    payload = {
        "peer": "steering-vectors",
        "method": "train_steering_vector (mean_aggregator, read_token_index=-1, "
        "layer_type=decoder_block) + SteeringVector.apply(multiplier=strength)",
        "strength_meaning": "multiplier of the per-layer mean difference mean(h+ - h-), "
        "added to every token's decoder-block output (= our mean-diff alpha)",
        "versions": versions(["steering-vectors"]),
        "config": run_info(args, layers, len(pairs)),
        "compat_shims": shims,
        "seconds": {
            "model_load": load.seconds,
            "fit": fit.seconds,
            "eval_unedited": unedited.summary["seconds"],
            "eval_per_strength": [row["eval_seconds"] for row in rows],
        },
        "vector_norms": norms,
        "unedited": {k: unedited.summary[k] for k in ("mc1", "mc2", "mc3", "n")},
        "results": rows,
        "checks": checks(rows),
    }
    write_result(args.out, payload)
    print(f"[sv] checks {payload['checks']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
