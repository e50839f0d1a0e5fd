#!/usr/bin/env python
"""The KL harm of ICD's readout after a ``sea compare`` run, which reports none for it.

``sea compare`` measures harm (KL on neutral text, free generations) through an editor's
hooks; ICD and CD change only the scorer's readout, so their rows have no harm columns.
This script measures the KL half for ICD on the same footing as the other methods' harm
units: the same neutral texts (the first ``--texts`` HaluEval general responses, each
truncated to ``--max-tokens`` tokens, the defaults of ``sea compare``), per-token
``KL(readout ‖ unedited)`` of the readout's next-token distribution ``softmax(s)``
(:func:`~spectral_edit.evaluate.kl.measure_readout_kl`, as ``sea tune`` measures it),
with the induced model the run trained and stored (``units/icd/prepared.safetensors``,
loaded, not retrained) at each setting of ICD's grid (``--all``) or at the setting the run
chose. Writes ``--output`` (JSON) and prints it. Example (the embedded model)::

    python benchmarks/icd_readout_kl.py --run runs/compare-icd --all \\
        --output benchmarks/results/compare_icd_gemma/icd_readout_kl.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from spectral_edit import load_model
from spectral_edit.editors.baselines.lora import LoRAEditor
from spectral_edit.evaluate.contrast import Companion, ContrastReadout
from spectral_edit.evaluate.harm import neutral_texts
from spectral_edit.evaluate.kl import build_kl_reference, measure_readout_kl
from spectral_edit.experiments.methods import CONTRAST_GRID
from spectral_edit.experiments.settings import setting_id
from spectral_edit.util.atomic import atomic_write_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a sea compare --out folder")
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--texts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--all", action="store_true", help="every setting of ICD's grid")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()

    prepared = args.run / "units" / "icd" / "prepared.safetensors"
    if not prepared.is_file():
        parser.error(f"--run {args.run}: no {prepared} (run sea compare with icd first)")
    report = json.loads((args.run / "report.json").read_text(encoding="utf-8"))
    chosen = set(report["methods"]["icd"]["selections"].values())
    settings = [s for s in CONTRAST_GRID if args.all or setting_id(s) in chosen]

    model, tokenizer = load_model(args.model)
    induced = LoRAEditor.load(prepared, model)
    texts = neutral_texts(args.data_dir, limit=args.texts)
    reference = build_kl_reference(model, tokenizer, texts, max_tokens=args.max_tokens)
    companion = Companion(model, induced, "induced model")
    rows = {}
    for setting in settings:
        readout = ContrastReadout(companion, setting.beta, setting.plausibility, name="icd")
        summary = measure_readout_kl(model, reference, readout).summary
        rows[setting_id(setting)] = {**summary, "chosen": setting_id(setting) in chosen}
        print(setting_id(setting), json.dumps(rows[setting_id(setting)]), flush=True)
    result = {
        "model": args.model,
        "run": str(args.run),
        "texts": len(texts),
        "max_tokens": args.max_tokens,
        "induced": {k: v for k, v in induced.metadata.items() if k != "modules"},
        "settings": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
