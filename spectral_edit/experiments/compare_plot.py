"""The comparison's plot: TruthfulQA MC2 against control-task accuracy, one point per
method. Needs matplotlib (the ``plots`` extra), imported only here, when plotting."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..util.atomic import atomic_path
from ..util.extras import require


def plot_truthfulness_vs_control(
    points: Mapping[str, tuple[float, float]], model: str, path: str | Path
) -> Path:
    """Scatter ``method → (control accuracy, MC2)`` (percent) into the PNG ``path``;
    ``none`` (the unedited model) is drawn as a square.

    Raises:
        MissingExtraError: matplotlib is not installed.
    """
    matplotlib = require("matplotlib", "plots", "the comparison plot")
    matplotlib.use("Agg")
    plt = require("matplotlib.pyplot", "plots", "the comparison plot")

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, (control, mc2) in points.items():
        marker = "s" if name == "none" else "o"
        ax.scatter(control, mc2, marker=marker, s=40)
        ax.annotate(name, (control, mc2), xytext=(4, 4), textcoords="offset points", fontsize=8)
    ax.set_xlabel("control tasks: mean accuracy (%)")
    ax.set_ylabel("TruthfulQA MC2, held-out folds (%)")
    ax.set_title(f"Truthfulness vs. general ability: {model}", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)
    return path
