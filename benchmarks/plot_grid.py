#!/usr/bin/env python
"""Plot the truthfulness grid: MC1 and MC2 against the number of edited layers, one line
per (N, ratio), centred fits, with the unedited model as a baseline. Scores are means
over the questions of both folds (816 of mc_task_v0's 817), for the settings scored on
all of them."""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
from grid_rows import fold_positions, grid_questions, grid_settings

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid_dir", type=Path)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    settings = grid_settings(args.grid_dir)
    folds = fold_positions(grid_questions(args.grid_dir, args.data_dir), args.data_dir)
    index = sorted(folds[1] + folds[2])
    unedited = settings["unedited"]
    lines: dict[tuple[int, float], list[tuple[int, float, float]]] = {}
    for setting in settings.values():
        o = setting.options
        if not o or not o["centered"] or o["neutral"] != "generate" or o["merge"] != "norm":
            continue
        if not setting.covers(index):
            continue
        point = (o["last"], setting.mean("mc1", index), setting.mean("mc2", index))
        lines.setdefault((o["n"], o["ratio"]), []).append(point)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for (n, ratio), points in sorted(lines.items()):
        points.sort()
        layers = [p[0] for p in points]
        for axis, column in zip(axes, (1, 2), strict=True):
            axis.plot(layers, [p[column] for p in points], marker="o", label=f"N={n}, r={ratio}")
    for axis, metric in zip(axes, ("mc1", "mc2"), strict=True):
        axis.axhline(unedited.mean(metric, index), color="black", linestyle="--", label="unedited")
        axis.set_xscale("log", base=2)
        axis.set_xticks([2, 4, 8, 18], labels=["2", "4", "8", "18"])
        axis.set_xlabel("edited layers (last L)")
        axis.set_ylabel(f"TruthfulQA {metric.upper()} (%)")
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(f"SEA on Gemma 3 270M, HaluEval demonstrations, centred, {len(index)} questions")
    fig.tight_layout()
    out = args.out or args.grid_dir / "grid.png"
    fig.savefig(out, dpi=120)
    print(out)


if __name__ == "__main__":
    main()
