#!/usr/bin/env python
"""Table of the bias experiment (``bias.jsonl`` of bias_grid.py) as Markdown."""

from __future__ import annotations

import argparse
from pathlib import Path

from spectral_edit.experiments.store import Store
from spectral_edit.util.report import markdown_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bias_dir", type=Path)
    args = parser.parse_args()
    rows = Store(args.bias_dir).rows("bias")
    supplements = {r["name"]: r["truthfulqa"] for r in rows if r.get("supplement") == "truthfulqa"}
    rows = [r for r in rows if "supplement" not in r]
    for row in rows:
        if row.get("truthfulqa") is None and row["name"] in supplements:
            row["truthfulqa"] = supplements[row["name"]]
    features = ("linear", "tanh", "elu", "squared-exponential")

    def order(row: dict) -> tuple:
        """Unedited first, then N descending, feature, uncentred before centred, scale."""
        o = row["options"]
        if not o:
            return (0,)
        return (1, -o["n"], features.index(o["feature"]), o["centered"], o.get("scale_factor", 1))

    rows.sort(key=order)
    table = []
    for row in rows:
        overall = row["bbq"]["overall"]
        amb, dis = overall["ambig"], overall["disambig"]
        tqa = row.get("truthfulqa") or {}
        o = row["options"]
        name = (
            "unedited"
            if not o
            else (f"{o['feature']} N={o['n']} {'centred' if o['centered'] else 'uncentred'}")
        )
        if o.get("scale_factor", 1) != 1 and o.get("feature") != "linear":
            name += f", s = {o['scale_factor']:g} × RMS"
        ranks = row.get("ranks") or {}
        table.append(
            [
                name,
                ", ".join(f"{v[0]}/{v[1]}" for v in ranks.values()) or "—",
                amb["accuracy"],
                dis["accuracy"],
                amb["unknown_rate"],
                dis["unknown_rate"],
                amb["bias_score"],
                dis["bias_score"],
                amb["stereotype_rate"],
                dis["stereotype_rate"],
                tqa.get("mc1"),
                tqa.get("mc2"),
            ]
        )
    headers = [
        "editor",
        "k+/k- (last 2 layers)",
        "A% amb",
        "A% dis",
        "U% amb",
        "U% dis",
        "BS% amb",
        "BS% dis",
        "SR% amb",
        "SR% dis",
        "TQA MC1",
        "TQA MC2",
    ]
    text = markdown_table(headers, table)
    (args.bias_dir / "bias.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
