"""The figures of ``sea inspect``, drawn from its JSON (:func:`~.inspection.inspect_editor`)
alone: the signature per layer, the spectrum of Ω+ and Ω- per layer as heat maps, the
ranks, and the activation embeddings. Needs matplotlib (the ``plots`` extra), imported
only here."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..util.atomic import atomic_path
from ..util.extras import require

COLOURS = {
    "positive": "tab:green",
    "negative": "tab:red",
    "neutral": "tab:blue",
    "edited": "tab:orange",
}


def _pyplot() -> Any:
    matplotlib = require("matplotlib", "plots", "the inspection figures")
    matplotlib.use("Agg")
    return require("matplotlib.pyplot", "plots", "the inspection figures")


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def plot_inspection(report: Mapping[str, Any], out: Path) -> dict[str, Path]:
    """Write each figure the report has numbers for into ``out``; returns them by name
    (``signature``, ``spectrum``, ``ranks``, ``embedding``)."""
    plt = _pyplot()
    written = {"ranks": _ranks(plt, report, out / "ranks.png")}
    if report["signatures"]["layers"]:
        written["signature"] = _signature(plt, report, out / "signature.png")
    if any("pos_energy_shares" in e for e in report["layers"]):
        written["spectrum"] = _spectrum(plt, report, out / "spectrum.png")
    if report["embeddings"]:
        written["embedding"] = _embedding(plt, report, out / "embedding.png")
    return written


def _signature(plt: Any, report: Mapping[str, Any], path: Path) -> Path:
    sig = report["signatures"]
    chosen = set(sig["chosen"])
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(sig["layers"]) + 2), 3.4))
    colours = ["tab:orange" if layer in chosen else "tab:grey" for layer in sig["layers"]]
    ax.bar([str(x) for x in sig["layers"]], sig["values"], color=colours)
    ax.set_xlabel("layer")
    ax.set_ylabel("signature (nuclear norm of A)")
    rule = sig["rule"] or "fitted layers"
    ax.set_title(f"Layer signature ({rule}; orange: edited)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return _save(plt, fig, path)


def _spectrum(plt: Any, report: Mapping[str, Any], path: Path) -> Path:
    colors = require("matplotlib.colors", "plots", "the inspection figures")
    entries = [e for e in report["layers"] if "pos_energy_shares" in e]
    width = max(max(len(e[f"{s}_energy_shares"]) for e in entries) for s in ("pos", "neg"))
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.3 * len(entries) + 2.2), sharey=True)
    floor = 1e-6
    for ax, sign, label in zip(axes, ("pos", "neg"), ("Ω+", "Ω−"), strict=True):
        grid = np.full((len(entries), width), np.nan)
        for row, entry in enumerate(entries):
            shares = entry[f"{sign}_energy_shares"]
            grid[row, : len(shares)] = np.maximum(shares, floor)
        image = ax.imshow(
            grid,
            aspect="auto",
            interpolation="nearest",
            norm=colors.LogNorm(vmin=floor, vmax=1.0),
            cmap="viridis",
        )
        for row, entry in enumerate(entries):
            k = entry[f"{sign}_rank"]
            if k <= width:
                ax.plot(k - 1, row, marker="|", color="white", markersize=9)
        ax.set_yticks(range(len(entries)), [str(e["layer"]) for e in entries])
        ax.set_xlabel("direction (descending singular value)")
        ax.set_title(f"{label}: energy share per direction (| = kept rank)", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046)
    axes[0].set_ylabel("layer")
    return _save(plt, fig, path)


def _ranks(plt: Any, report: Mapping[str, Any], path: Path) -> Path:
    entries = report["layers"]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.4 * len(entries) + 2), 3.4))
    xs = list(range(len(entries)))
    ax.bar([x - 0.2 for x in xs], [e["pos_rank"] for e in entries], 0.4, label="k+")
    ax.bar([x + 0.2 for x in xs], [e["neg_rank"] for e in entries], 0.4, label="k−")
    ax.set_xticks(xs, [str(e["layer"]) for e in entries])
    ax.set_xlabel("layer")
    ax.set_ylabel("rank kept")
    ax.set_title(f"Ranks per layer (hidden size {report['editor']['hidden_size']})", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(plt, fig, path)


def _embedding(plt: Any, report: Mapping[str, Any], path: Path) -> Path:
    panels = report["embeddings"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for name, points in panel["points"].items():
            xs = [p[0] for p in points]
            ys = [p[1] for p in points]
            ax.scatter(xs, ys, s=10, alpha=0.7, color=COLOURS.get(name), label=name)
        method = "t-SNE" if panel["method"] == "tsne" else "PCA"
        ax.set_title(f"layer {panel['layer']} ({method}, {panel['n']} demonstrations)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(fontsize=8)
    return _save(plt, fig, path)
