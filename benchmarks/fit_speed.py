#!/usr/bin/env python
"""Where the time of ``sea fit`` goes, and what the shared-prefix KV cache saves.

On one loaded model (load time reported apart), for the demonstrations of ``--demos``
(e.g. ``sea demos halueval --limit 100 --out runs/halu100.jsonl``), times

- ``plain forward``: the positive sequences (prompt + answer) through
  ``model(..., output_hidden_states=True)`` in right-padded batches, the usual way to
  read activations (it runs every layer and the LM head);
- ``capture``: :func:`~spectral_edit.hf.capture.capture` of the same sequences at the fit's
  layers (the shared primer once from a KV cache, no LM head, stops after the last layer
  needed), and the largest difference between the two's activations;
- ``neutral answers``: the greedy neutral answers (:func:`~spectral_edit.demos.activations.
  neutral_answers`, on the primer's cache, decoded ``GENERATION_WIDTH × batch`` rows
  together);
- ``fit``: :func:`~spectral_edit.experiments.pipeline.fit_editor` end to end (answers,
  three captures, SVDs): what ``sea fit`` runs after loading the model.

Writes ``--output`` (JSON) and prints it. Example (the embedded model, ~2 min on 2 CPU
cores)::

    python benchmarks/fit_speed.py --demos runs/halu100.jsonl \\
        --output benchmarks/results/fit_speed_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from spectral_edit import SeaOptions, load_model, read_demos
from spectral_edit.demos.activations import GENERATION_WIDTH, neutral_answers
from spectral_edit.demos.prompts import answer_text
from spectral_edit.experiments.pipeline import fit_editor
from spectral_edit.hf.capture import capture
from spectral_edit.hf.layers import find_decoder_layers, parse_layers
from spectral_edit.hf.tokens import encode_pair, input_device, pad_batch, pad_id_of
from spectral_edit.util.identity import path_identity
from spectral_edit.util.report import write_json


def plain_forward(model, tokenizer, sequences, layers, batch_size) -> torch.Tensor:
    """Last-token activations ``(N, L, d)`` from ``output_hidden_states`` (the layers'
    outputs; the last entry is final-normed in transformers 5, so ``layers`` excludes
    the last layer when compared)."""
    out = torch.empty(len(sequences), len(layers), model.config.hidden_size)
    pad, device = pad_id_of(tokenizer), input_device(model)
    for start in range(0, len(sequences), batch_size):
        rows = sequences[start : start + batch_size]
        ids, mask, positions = (t.to(device) for t in pad_batch(rows, pad, "right"))
        with torch.no_grad():
            hidden = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                output_hidden_states=True,
            ).hidden_states
        last = torch.tensor([len(r) - 1 for r in rows])
        for j, layer in enumerate(layers):
            rows_at = hidden[layer + 1][torch.arange(len(rows)), last]
            out[start : start + len(rows), j] = rows_at.cpu()
    return out


def positive_sequences(tokenizer, demos) -> tuple[list[str], list[str], list[list[int]]]:
    """The demonstrations' prompts, positive answer texts and the token ids of each
    prompt + answer (what :func:`plain_forward` and ``capture`` both read)."""
    prompts = [d.prompt for d in demos]
    answers = [answer_text(d.positive) for d in demos]
    sequences = [
        sum(encode_pair(tokenizer, p, a), []) for p, a in zip(prompts, answers, strict=True)
    ]
    return prompts, answers, sequences


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, round(time.perf_counter() - started, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demos", required=True, type=Path)
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--layers", default="last-8")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    (model, tokenizer), load_s = timed(lambda: load_model(args.model))
    demos = read_demos(args.demos)
    layers = parse_layers(args.layers, len(find_decoder_layers(model)))
    prompts, answers, sequences = positive_sequences(tokenizer, demos)
    # compare below the last layer: hidden_states' last entry is final-normed
    compared = [layer for layer in layers if layer < len(find_decoder_layers(model)) - 1]
    plain, plain_s = timed(
        lambda: plain_forward(model, tokenizer, sequences, compared, args.batch_size)
    )
    captured, capture_s = timed(
        lambda: capture(
            model, tokenizer, prompts, answers, layers=layers, batch_size=args.batch_size
        )
    )
    index = [layers.index(layer) for layer in compared]
    difference = float((captured[:, index] - plain).abs().max())
    scale = float(plain.abs().max())
    _, answers_s = timed(
        lambda: neutral_answers(model, tokenizer, demos, batch_size=args.batch_size)
    )
    options = SeaOptions(layers=args.layers)
    _, fit_s = timed(
        lambda: fit_editor(model, tokenizer, demos, options, batch_size=args.batch_size)
    )
    report = {
        "model": args.model,
        "demonstrations": {**path_identity(args.demos), "count": len(demos)},
        "mean_tokens_per_sequence": round(sum(map(len, sequences)) / len(sequences), 1),
        "layers": layers,
        "batch_size": args.batch_size,
        "decode_rows": GENERATION_WIDTH * args.batch_size,
        "seconds": {
            "load_model": load_s,
            "plain_forward_output_hidden_states": plain_s,
            "capture_one_kind": capture_s,
            "neutral_answers": answers_s,
            "fit_editor": fit_s,
        },
        "capture_speedup_over_plain_forward": round(plain_s / capture_s, 2),
        "capture_max_abs_difference": difference,
        "activation_max_abs": scale,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
    }
    if args.output:
        write_json(args.output, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
