#!/usr/bin/env python
"""Plot the truthfulness grid: MC1 and MC2 (all questions) against the number of edited
layers, one line per (N, ratio), centred fits, with the unedited model as a baseline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = [json.loads(x) for x in (args.grid_dir / "grid.jsonl").read_text().splitlines() if x]
    unedited = next(r for r in rows if r["name"] == "unedited")["summary"]
    lines: dict[tuple[int, float], list[tuple[int, float, float]]] = {}
    for row in rows:
        o = row["options"]
        if not o or not o["centered"] or o["neutral"] != "generate" or o["merge"] != "norm":
            continue
        s = row["summary"]
        lines.setdefault((o["n"], o["ratio"]), []).append((o["last"], s["mc1"], s["mc2"]))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for (n, ratio), points in sorted(lines.items()):
        points.sort()
        layers = [p[0] for p in points]
        for axis, column in zip(axes, (1, 2), strict=True):
            axis.plot(layers, [p[column] for p in points], marker="o", label=f"N={n}, r={ratio}")
    for axis, metric in zip(axes, ("mc1", "mc2"), strict=True):
        axis.axhline(unedited[metric], color="black", linestyle="--", label="unedited")
        axis.set_xscale("log", base=2)
        axis.set_xticks([2, 4, 8, 18], labels=["2", "4", "8", "18"])
        axis.set_xlabel("edited layers (last L)")
        axis.set_ylabel(f"TruthfulQA {metric.upper()} (%)")
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle("SEA on Gemma 3 270M, HaluEval demonstrations, centred, all 817 questions")
    fig.tight_layout()
    out = args.out or args.grid_dir / "grid.png"
    fig.savefig(out, dpi=120)
    print(out)


if __name__ == "__main__":
    main()
