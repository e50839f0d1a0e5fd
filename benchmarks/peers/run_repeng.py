"""TruthfulQA MC1/MC2/MC3 of ``repeng`` (0.4.0) control vectors, scored by our scorer.

Run with the repeng virtualenv (``setup_peer_envs.sh``)::

    /work/venv-peer-repeng/bin/python benchmarks/peers/run_repeng.py \\
        --model MODEL_DIR --demos spectral_edit/resources/truthful_demos.jsonl \\
        --data-dir /work/shared/data --layers 10,11,12,13,14,15,16,17 \\
        --strength 0 100 --fold 1 --limit 20 --out runs/peers/repeng.json

Fit: ``ControlModel(model, layers)`` wraps the chosen decoder blocks in ``ControlModule``\\ s
(in place, inside ``model``), then ``ControlVector.train(control_model, tokenizer,
[DatasetEntry(positive=pos_text, negative=neg_text), ...], method="pca_diff",
hidden_layers=layers)``: per layer the unit first principal component of the centred
paired differences of last-token hidden states, signed so positives project higher.
Apply: ``control_model.set_control(vector, coeff)`` adds ``coeff * u_l`` to every token's
block output. ``u_l`` has norm 1, so ``--strength`` is in hidden-state units (NOT our
PCA-vector ``alpha``, which multiplies ``s_l * u_l``). The result file records, per layer,
``s_l = mean_i (h+_i - h-_i) . u_l`` from our own last-token capture of the same texts
(decoder-block outputs) and the share of pairs projecting positively, and per strength
``alpha_per_layer = coeff / s_l``, the equivalent PCA-vector ``alpha`` of each layer.

Our scorer is given ``control_model.model`` (the HF model whose blocks repeng wrapped):
it needs ``base_model`` and the LM head, which the ``ControlModel`` wrapper does not
expose; the wrapped blocks run inside ``base_model``, and the strength-0 / non-zero
checks in the result file confirm the control passes through.

Compatibility shim (repeng 0.4.0 with transformers >= 4.5x Gemma 3): the decoder loop reads
``decoder_layer.attention_type``, which ``ControlModule`` lacks (repeng issue #64, fixed in
0.5.0 by forwarding attribute lookups); the runner copies ``attention_type`` from each
wrapped block onto its ``ControlModule``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from _common import Run, Timer, build_parser
from repeng import ControlModel, ControlVector, DatasetEntry
from repeng.control import model_layer_list

from spectral_edit.hf.capture import capture


def copy_attention_types(control_model: ControlModel) -> list[str]:
    """Give each ``ControlModule`` its block's ``attention_type`` (see the module doc);
    returns the notes for the result file (empty when no block has one)."""
    notes = []
    layers = model_layer_list(control_model)
    for layer_id in control_model.layer_ids:
        module = layers[layer_id]
        kind = getattr(module.block, "attention_type", None)
        if kind is not None and not hasattr(module, "attention_type"):
            module.attention_type = kind
            notes.append(f"layer {layer_id}: ControlModule.attention_type = {kind!r}")
    return notes


def projections(
    model: torch.nn.Module,
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    layers: Sequence[int],
    directions: dict[int, np.ndarray],
) -> dict[str, dict[str, float]]:
    """Per layer, from our last-token capture of the demo texts at the decoder-block outputs
    (``model`` must not be wrapped): ``s`` = ``mean_i (h+_i - h-_i) . u_l`` (the scale our
    PCA-vector baseline multiplies ``alpha`` by) and ``positive_fraction`` = the share of
    pairs with ``(h+_i - h-_i) . u_l > 0`` (repeng signs ``u_l`` so that it is >= 0.5)."""
    pos = capture(model, tokenizer, [p for p, _ in pairs], layers=layers)  # (N, L, d)
    neg = capture(model, tokenizer, [n for _, n in pairs], layers=layers)
    diff = (pos - neg).double()  # (N, L, d)
    out = {}
    for i, layer in enumerate(layers):
        proj = diff[:, i] @ torch.as_tensor(directions[layer]).double()  # (N,)
        out[str(layer)] = {
            "s": float(proj.mean()),
            "positive_fraction": float((proj > 0).double().mean()),
        }
    return out


@contextlib.contextmanager
def controlled(control_model: ControlModel, vector: ControlVector, coeff: float) -> Iterator[None]:
    """``set_control(vector, coeff)`` for the block, ``reset()`` after it."""
    control_model.set_control(vector, coeff)
    try:
        yield
    finally:
        control_model.reset()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(
        __doc__.splitlines()[0],
        "repeng coeff(s) on the unit direction (0 = unedited), e.g. 0 50 100",
    )
    run = Run.start("repeng", parser, argv)
    with Timer() as fit:
        control_model = ControlModel(run.model, run.layers)
        run.shims += copy_attention_types(control_model)
        dataset = [DatasetEntry(positive=p, negative=n) for p, n in run.pairs]
        vector = ControlVector.train(
            control_model,
            run.tokenizer,
            dataset,
            method="pca_diff",
            hidden_layers=run.layers,
            batch_size=run.args.fit_batch_size,
        )
    print(f"[repeng] fit {fit.seconds:.1f} s")
    control_model.reset()
    hf_model = control_model.model  # what our scorer runs (blocks wrapped in place)
    rows = run.sweep(lambda strength: controlled(control_model, vector, strength), hf_model)

    restored = control_model.unwrap()  # plain decoder blocks again, for our capture
    with Timer() as reference:
        projected = projections(restored, run.tokenizer, run.pairs, run.layers, vector.directions)
    mean_abs_s = float(np.mean([abs(p["s"]) for p in projected.values()]))
    for row in rows:
        row["alpha_per_layer"] = {
            k: (row["strength"] / p["s"] if p["s"] else None) for k, p in projected.items()
        }
    print(f"[repeng] mean |s_l| {mean_abs_s:.3g}")
    description = {
        "peer": "repeng",
        "method": "ControlModel(model, layers) + ControlVector.train(method='pca_diff', "
        "hidden_layers=layers) + ControlModel.set_control(vector, coeff=strength)",
        "strength_meaning": "coeff times the unit PCA direction u_l, added to every token's "
        "decoder-block output; our PCA-vector alpha = coeff / s_l",
        "direction_norms": {
            str(k): float(np.linalg.norm(v)) for k, v in sorted(vector.directions.items())
        },
        "projection_on_direction": projected,
        "mean_abs_s": mean_abs_s,
    }
    return run.finish(
        rows, fit.seconds, ["repeng"], description, {"scale_capture": reference.seconds}
    )


if __name__ == "__main__":
    sys.exit(main())
