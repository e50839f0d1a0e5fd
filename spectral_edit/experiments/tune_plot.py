"""The Pareto plot of ``sea tune``: target gain against harm, one colour and marker per
method. Needs matplotlib (the ``plots`` extra), imported only here, when plotting.

Two rows, two panels each (harm = control-task loss in points, and mean KL in nats):

- top, the tuning part: every probe faint, the chosen probe bold; y = the tuning target's
  gain over the unedited model;
- bottom, the held-out part: each method's chosen setting; y = the held-out gain of the
  report's gain metric (MC2 for TruthfulQA).

In every panel the budget on that harm is a dashed vertical line and the non-dominated
points (:func:`pareto_front`: no other point has less or equal harm and more or equal gain,
one of them strictly) are joined by a grey step line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..util.atomic import atomic_path
from ..util.extras import require

__all__ = ["HarmPoint", "ParetoSeries", "pareto_front", "plot_pareto"]

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


@dataclass(frozen=True)
class HarmPoint:
    """One setting: its ``control`` loss (points), mean ``kl`` (nats) and ``gain``."""

    control: float
    kl: float
    gain: float


@dataclass(frozen=True)
class ParetoSeries:
    """A method's points: every probe on the tuning part, the chosen probe (``None`` when
    nothing was feasible) and the chosen setting on the held-out part."""

    method: str
    probes: tuple[HarmPoint, ...]
    chosen: HarmPoint | None
    held_out: HarmPoint | None


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated ``(harm, gain)`` points (less harm and more gain are
    better), sorted by harm; points with a non-finite coordinate are left out. Of equal
    points the first is kept."""
    finite = [
        (h, -g, i) for i, (h, g) in enumerate(points) if math.isfinite(h) and math.isfinite(g)
    ]
    front: list[int] = []
    best_gain = -math.inf
    for _harm, neg_gain, i in sorted(finite):
        if -neg_gain > best_gain:
            front.append(i)
            best_gain = -neg_gain
    return front


Rows = Sequence[tuple[str, list[HarmPoint], list[HarmPoint]]]


def _panel(ax: Any, rows: Rows, harm: str, limit: float | None, xlabel: str, ylabel: str) -> None:
    """Scatter ``rows`` = ``[(method, [points], [bold points])]`` on harm ``harm``."""
    every: list[tuple[float, float]] = []
    for k, (method, faint, bold) in enumerate(rows):
        colour, marker = f"C{k % 10}", MARKERS[k % len(MARKERS)]
        if faint:
            ax.scatter(
                [getattr(p, harm) for p in faint],
                [p.gain for p in faint],
                color=colour,
                marker=marker,
                alpha=0.3,
                s=22,
            )
        label: str | None = method
        for p in bold:
            ax.scatter(
                getattr(p, harm),
                p.gain,
                color=colour,
                marker=marker,
                s=70,
                edgecolors="black",
                linewidths=1.2,
                label=label,
            )
            label = None
        if not bold:  # keep the method in the legend
            ax.scatter([], [], color=colour, marker=marker, label=f"{method} (none feasible)")
        every += [(getattr(p, harm), p.gain) for p in (*faint, *bold)]
    front = [every[i] for i in pareto_front(every)]
    if front:
        xs, ys = zip(*front, strict=True)
        ax.step(xs, ys, where="post", color="grey", linewidth=1, alpha=0.8, label="frontier")
    if limit is not None:
        ax.axvline(limit, color="red", linestyle="--", linewidth=1, label="budget")
    ax.axhline(0.0, color="black", linewidth=0.5, alpha=0.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def plot_pareto(
    series: Sequence[ParetoSeries],
    path: str | Path,
    *,
    title: str,
    tuning_label: str,
    held_out_label: str,
    control_budget: float | None = None,
    kl_budget: float | None = None,
) -> Path:
    """Draw the plot (module docstring) into the PNG ``path``, written atomically.
    ``tuning_label`` / ``held_out_label``: the y quantities of the two rows.

    Raises:
        MissingExtraError: matplotlib is not installed.
    """
    matplotlib = require("matplotlib", "plots", "the Pareto plot")
    matplotlib.use("Agg")
    plt = require("matplotlib.pyplot", "plots", "the Pareto plot")

    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    tuning: Rows = [(s.method, list(s.probes), [s.chosen] if s.chosen else []) for s in series]
    held: Rows = [(s.method, [], [s.held_out] if s.held_out else []) for s in series]
    for row, (rows, ylabel, where) in enumerate(
        ((tuning, tuning_label, "tuning part"), (held, held_out_label, "held-out part"))
    ):
        _panel(
            axes[row][0],
            rows,
            "control",
            control_budget,
            f"control-task loss, {where} (points)",
            ylabel,
        )
        _panel(axes[row][1], rows, "kl", kl_budget, f"mean KL, {where} (nats/token)", ylabel)
    axes[0][0].set_title("every probe (faint), chosen (bold)", fontsize=9)
    axes[1][0].set_title("chosen setting per method, held out", fontsize=9)
    seen: dict[str, Any] = {}
    for ax in (a for row in axes for a in row):  # the budget may be drawn in one panel only
        handles, labels = ax.get_legend_handles_labels()
        for handle, label in zip(handles, labels, strict=True):
            seen.setdefault(label, handle)
    fig.legend(seen.values(), seen.keys(), loc="lower center", ncol=min(len(seen), 6), fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.92, wspace=0.22, hspace=0.32)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
