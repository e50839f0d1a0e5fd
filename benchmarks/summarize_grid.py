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
import json
from pathlib import Path

from spectral_edit.data import load_fold
from spectral_edit.data.truthfulqa import normalize_question
from spectral_edit.report import markdown_table, write_json


def _mean(values, index):
    picked = [values[i] for i in index]
    return 100.0 * sum(picked) / len(picked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid_dir", type=Path)
    parser.add_argument("--data-dir", required=True)
    args = parser.parse_args()
    rows = [json.loads(x) for x in (args.grid_dir / "grid.jsonl").read_text().splitlines() if x]
    questions = json.loads((args.grid_dir / "questions.json").read_text())
    position = {normalize_question(q): i for i, q in enumerate(questions)}
    folds = {}
    for fold in (1, 2):
        folds[fold] = sorted(
            position[normalize_question(r.question)]
            for r in load_fold(fold, args.data_dir)
            if normalize_question(r.question) in position
        )
    unedited = next(r for r in rows if r["name"] == "unedited")
    sea = [
        r
        for r in rows
        if r["name"] != "unedited"
        and r["options"].get("neutral") == "generate"
        and r["options"].get("merge") == "norm"
    ]
    table, selection = [], []
    for n in sorted({r["options"]["n"] for r in sea}):
        candidates = [r for r in sea if r["options"]["n"] == n]
        for tune, test in ((1, 2), (2, 1)):
            best = max(
                candidates,
                key=lambda r: _mean(r["mc1"], folds[tune]) + _mean(r["mc2"], folds[tune]),
            )
            o = best["options"]
            entry = {
                "n": n,
                "tuned_on": tune,
                "reported_on": test,
                "n_candidates": len(candidates),
                "setting": f"last-{o['last']}, r={o['ratio']}, "
                f"{'centred' if o['centered'] else 'uncentred'}",
                "ranks": best.get("ranks"),
                **{f"unedited_{m}": _mean(unedited[m], folds[test]) for m in ("mc1", "mc2", "mc3")},
                **{f"sea_{m}": _mean(best[m], folds[test]) for m in ("mc1", "mc2", "mc3")},
            }
            selection.append(entry)
            table.append(
                [
                    n,
                    f"{tune}→{test}",
                    entry["setting"],
                    entry["unedited_mc1"],
                    entry["sea_mc1"],
                    entry["unedited_mc2"],
                    entry["sea_mc2"],
                    entry["unedited_mc3"],
                    entry["sea_mc3"],
                ]
            )
    headers = [
        "N",
        "tune→test fold",
        "chosen setting",
        "MC1 unedited",
        "MC1 SEA",
        "MC2 unedited",
        "MC2 SEA",
        "MC3 unedited",
        "MC3 SEA",
    ]
    write_json(
        args.grid_dir / "selection.json",
        {"folds": {k: len(v) for k, v in folds.items()}, "selection": selection},
    )
    text = markdown_table(headers, table)
    (args.grid_dir / "selection.md").write_text(text)
    print(text)
    everything = [
        [r["name"], r["summary"]["mc1"], r["summary"]["mc2"], r["summary"]["mc3"]] for r in rows
    ]
    (args.grid_dir / "all_configs.md").write_text(
        markdown_table(["configuration (all questions)", "MC1", "MC2", "MC3"], everything)
    )


if __name__ == "__main__":
    main()
