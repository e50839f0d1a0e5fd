"""The README's harm tables, written from the result files of ``harm_cause.py``, ``sea tune``
(one folder per budget) and ``tune_generation.py``.

Usage::

    python benchmarks/harm_tables.py --cause runs/harm-cause --tune runs/tune-gemma \
        [--tune-nobudget runs/tune-gemma-nobudget]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from spectral_edit.util.report import markdown_table


def _load(path: Path) -> Any:
    return json.loads(path.read_text())


def cause_tables(folder: Path) -> str:
    report = _load(folder / "report.json")

    def row(name: str, s: dict[str, Any]) -> list[Any]:
        t, k = s["truthfulqa"], s["kl"]
        return [
            name,
            t["mc1"],
            t["mc2"],
            t["mc3"],
            s["control"]["average"]["acc"],
            k["kl_mean"],
            k["kl_p95"],
        ]

    head = ["variant", "MC1", "MC2", "MC3", "control avg", "KL mean", "KL p95"]
    tune = [row("unedited", report["unedited_tune"])]
    tune += [row(f"{v} ({r['what']})", r["tune"]) for v, r in report["variants"].items()]
    held = [row("unedited" if v == "none" else v, s) for v, s in report["held_out"].items()]
    return (
        "Tuning fold\n\n"
        + markdown_table(head, tune)
        + "\n\nHeld-out fold\n\n"
        + markdown_table(head, held)
        + "\n"
    )


def tune_table(folder: Path) -> str:
    report = _load(folder / "report.json")
    gen_path = folder / "generation.json"
    gen = _load(gen_path) if gen_path.exists() else {}
    base = report["baseline"]

    def gen_cells(name: str) -> list[Any]:
        g = gen.get(name)
        if g is None:
            return [None] * 5
        t, f = g["truthfulqa_gen"], g["generation"]
        return [t["bleu_acc"], t["rouge1_acc"], t["info"], f["repeat4"], f["distinct2"]]

    def control(summary: dict[str, Any]) -> float | None:
        return summary.get("average", {}).get("acc")

    rows = [
        [
            "none (unedited)",
            "—",
            base["report_target"]["mc1"],
            base["report_target"]["mc2"],
            base["report_target"]["mc3"],
            control(base["control_report"]),
            0.0,
            0.0,
            *gen_cells("none"),
        ]
    ]
    for name, m in report["methods"].items():
        held = m.get("held_out")
        if held is None:
            rows.append([name, f"no feasible setting ({m.get('reason')})", *[None] * 11])
            continue
        t, k = held["target"], held["kl"]
        rows.append(
            [
                name,
                f"{m['chosen']}, α = {m['alpha']:.3g}",
                t["mc1"],
                t["mc2"],
                t["mc3"],
                control(held["control"]),
                k["kl_mean"],
                k["kl_p95"],
                *gen_cells(name),
            ]
        )
    head = [
        "method",
        "chosen",
        "MC1",
        "MC2",
        "MC3",
        "control avg",
        "KL mean",
        "KL p95",
        "BLEU acc",
        "ROUGE-1 acc",
        "info %",
        "rep-4 %",
        "distinct-2 %",
    ]
    return markdown_table(head, rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cause", type=Path)
    parser.add_argument("--tune", type=Path, nargs="*", default=[])
    args = parser.parse_args()
    if args.cause:
        print(cause_tables(args.cause))
    for folder in args.tune:
        print(f"{folder}\n\n{tune_table(folder)}")


if __name__ == "__main__":
    main()
