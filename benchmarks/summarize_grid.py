#!/usr/bin/env python
"""Fold-based selection for the truthfulness grid (``grid.jsonl`` of truthfulness_grid.py).

For each N and each direction (tune on fold A, report on fold B): pick the configuration
with the best mean of MC1 and MC2 on fold A's questions, report its MC1/MC2/MC3 on fold
B's questions next to the unedited model on fold B. The 2-fold average of the two
directions covers all questions that fall in a fold, none of them scored by a setting
tuned on itself. Writes ``selection.json`` and ``selection.md`` beside the grid.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from grid_rows import METRICS, fold_positions, grid_questions, grid_settings, select

from spectral_edit.util.report import fmt, markdown_table, write_json


def _setting_label(options: dict) -> str:
    centring = "centred" if options["centered"] else "uncentred"
    return f"last-{options['last']}, r={options['ratio']}, {centring}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid_dir", type=Path)
    parser.add_argument("--data-dir", required=True)
    args = parser.parse_args()
    settings = grid_settings(args.grid_dir)
    questions = grid_questions(args.grid_dir, args.data_dir)
    folds = fold_positions(questions, args.data_dir)
    unedited = settings["unedited"]
    sea = [
        s
        for s in settings.values()
        if s.name != "unedited"
        and s.options.get("neutral") == "generate"
        and s.options.get("merge") == "norm"
    ]
    table, selection = [], []
    for n in sorted({s.options["n"] for s in sea}):
        candidates = [s for s in sea if s.options["n"] == n]
        for tune, test in ((1, 2), (2, 1)):
            best = select(candidates, folds[tune])
            if best is None or not (best.covers(folds[test]) and unedited.covers(folds[test])):
                print(f"N={n} {tune}→{test}: not every needed evaluation is in the grid; skipped")
                continue
            entry = {
                "n": n,
                "tuned_on": tune,
                "reported_on": test,
                "n_candidates": len(candidates),
                "setting": _setting_label(best.options),
                "ranks": best.ranks,
                **{f"unedited_{m}": unedited.mean(m, folds[test]) for m in METRICS},
                **{f"sea_{m}": best.mean(m, folds[test]) for m in METRICS},
            }
            selection.append(entry)
            table.append(
                [n, f"{tune}→{test}", entry["setting"]]
                + [entry[f"{who}_{m}"] for m in METRICS for who in ("unedited", "sea")]
            )
    headers = ["N", "tune→test fold", "chosen setting"] + [
        f"{m.upper()} {who}" for m in METRICS for who in ("unedited", "SEA")
    ]
    write_json(
        args.grid_dir / "selection.json",
        {"folds": {k: len(v) for k, v in folds.items()}, "selection": selection},
    )
    text = markdown_table(headers, table)
    (args.grid_dir / "selection.md").write_text(text)
    print(text)
    subsets = {"fold 1": folds[1], "fold 2": folds[2], "all": list(range(len(questions)))}
    everything = [
        [s.name]
        + [
            fmt(s.mean(m, index)) if s.covers(index) else "—"
            for index in subsets.values()
            for m in METRICS
        ]
        for s in settings.values()
    ]
    headers = ["configuration"] + [f"{m.upper()} {k}" for k in subsets for m in METRICS]
    (args.grid_dir / "all_configs.md").write_text(markdown_table(headers, everything))


if __name__ == "__main__":
    main()
