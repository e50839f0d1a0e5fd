"""Markdown table of peer / baseline result files (standard library only, any Python).

Usage: ``python benchmarks/peers/summarize.py benchmarks/peers/results/*.json``
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HEADER = (
    "| method | strength | MC1 | MC2 | MC3 | n | max abs dlogp vs unedited | fit s | eval s |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def rows_of(path: Path) -> list[str]:
    """One table row per strength of one result file."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    fit = data["seconds"]["fit"]
    lines = []
    for row in data["results"]:
        lines.append(
            f"| {data['peer']} | {row['strength']:g} | {row['mc1']:.2f} | {row['mc2']:.2f} | "
            f"{row['mc3']:.2f} | {row['n']} | {row['max_abs_logprob_diff_vs_unedited']:.3g} | "
            f"{fit:.1f} | {row['eval_seconds']:.1f} |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    print(HEADER)
    for path in args.files:
        for line in rows_of(path):
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
