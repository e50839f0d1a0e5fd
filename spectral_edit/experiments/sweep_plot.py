"""The plot of ``sea sweep``: held-out TruthfulQA MC1 and MC2 against the number of
demonstrations N, one line per method with error bars over the draws, the unedited model
as a dashed line. Needs matplotlib (the ``plots`` extra), imported only here."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..util.atomic import atomic_path
from ..util.extras import require

PANELS = (("mc1", "MC1"), ("mc2", "MC2"))


def plot_sweep(report: Mapping[str, Any], path: str | Path) -> Path:
    """Draw the curves of a sweep's JSON (:func:`~.sweep.run_sweep`) into the PNG ``path``:
    per method and N, the mean over the draws with bars of one sample standard deviation
    (none with one draw), on a log N axis.

    Raises:
        MissingExtraError: matplotlib is not installed.
    """
    matplotlib = require("matplotlib", "plots", "the sweep plot")
    matplotlib.use("Agg")
    plt = require("matplotlib.pyplot", "plots", "the sweep plot")

    fig, axes = plt.subplots(1, len(PANELS), figsize=(5.2 * len(PANELS), 4.2))
    for ax, (metric, label) in zip(axes, PANELS, strict=True):
        for name, method in report["methods"].items():
            rows = [r for r in method["curve"] if r[metric] is not None]
            if not rows:
                continue
            ax.errorbar(
                [r["n"] for r in rows],
                [r[metric]["mean"] for r in rows],
                yerr=[r[metric]["std"] or 0.0 for r in rows],
                marker="o",
                capsize=3,
                label=name,
            )
        ax.axhline(report["unedited"][metric], color="grey", linestyle="--", label="unedited")
        ax.set_xscale("log")
        ax.set_xticks(report["sizes"], [str(n) for n in report["sizes"]])
        ax.minorticks_off()
        ax.set_xlabel("demonstrations N")
        ax.set_ylabel(f"TruthfulQA {label}, held out (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    draws = report["options"]["draws"]
    questions = ", ".join(f"{k} {v}" for k, v in report["questions"].items())
    fig.suptitle(
        f"{report['model'] or 'model'}: tuned on one fold, scored on the other; "
        f"mean ± std over {draws} draws ({questions} questions)",
        fontsize=9,
    )
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
