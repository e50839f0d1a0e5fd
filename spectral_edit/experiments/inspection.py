"""``sea inspect``: what a fitted SEA editor holds, as numbers (JSON) and figures.

From the editor alone (its metadata, written at fit time by
:meth:`~spectral_edit.editors.sea_fit.SpectralFitter.fit`): per fitted layer the signature
value (the paper's layer heuristic; for a ``top-signature-L`` fit, of every candidate
layer, with the chosen ones), the ranks ``k+``/``k-`` (from the factors, which the
metadata must agree with) and the spectrum of Ω+ and Ω-: each of the top directions'
share of the energy (``layer_stats`` ``pos_energy_shares`` / ``neg_energy_shares``).
The numbers are the metadata's, copied, never recomputed.

With captured activations (:mod:`~spectral_edit.demos.activations_file`), a 2-D
embedding per chosen layer of the positive, negative, neutral and edited neutral
activations together: t-SNE (scikit-learn) or PCA (``auto``: t-SNE where scikit-learn is
installed and there are enough points, else PCA, saying why). "Edited neutral" is the
editor's edit of the neutral activation at that layer alone (the layer's ``h'``), not
the activation after edits at earlier layers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..demos.activations import DemoActivations
from ..editors.sea import SpectralEditor
from ..util.extras import MissingExtraError, require
from ..util.report import write_json

EMBEDDINGS = ("auto", "tsne", "pca")
SETS = ("positive", "negative", "neutral", "edited")
MIN_TSNE_POINTS = 12
"""Fewer points than this (all sets together) are embedded by PCA under ``auto``."""
RECORDED = (
    "layer",
    "pos_rank",
    "neg_rank",
    "signature",
    "pos_energy_top1",
    "neg_energy_top1",
    "pos_energy_kept",
    "neg_energy_kept",
    "pos_energy_shares",
    "neg_energy_shares",
)
"""What :func:`inspect_editor` copies from each ``layer_stats`` entry."""


class InspectionError(ValueError):
    """What was asked cannot be inspected; the message names the cause."""


def inspect_editor(
    editor: SpectralEditor,
    activations: DemoActivations | None = None,
    *,
    layers: Sequence[int] | None = None,
    embedding: str = "auto",
    max_points: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """The JSON of an inspection (module docstring): ``editor`` (its options), ``layers``
    (per fitted layer the metadata's ranks, energies, spectrum shares and signature),
    ``signatures`` (the layers, values and chosen layers of the signature plot, and where
    they came from), and ``embeddings`` (per layer of ``layers``, default the active
    layer of highest signature and the last active layer; only with ``activations``, of
    their first ``max_points`` demonstrations).

    Raises:
        InspectionError: metadata that disagree with the factors, activations of another
            hidden size or without the layers asked for, a layer the editor was not fitted
            on, or an unknown ``embedding``.
        MissingExtraError: ``embedding="tsne"`` without scikit-learn.
    """
    if embedding not in EMBEDDINGS:
        raise InspectionError(
            f"embedding must be one of {', '.join(EMBEDDINGS)}, not {embedding!r}"
        )
    meta = dict(editor.metadata)
    entries = _layer_entries(editor, meta)
    report: dict[str, Any] = {
        "editor": {
            "layers": list(editor.layers),
            "active_layers": list(editor.active_layers),
            "hidden_size": editor.hidden_size,
            "num_layers": editor.num_layers,
            "feature": str(editor.feature),
            "alpha": editor.alpha,
            "merge": str(editor.merge),
            **{k: meta.get(k) for k in ("n_demonstrations", "centered", "pos_ratio", "neg_ratio")},
        },
        "layers": entries,
        "signatures": _signatures(editor, meta, entries),
        "embeddings": [],
    }
    if activations is not None:
        chosen = list(layers) if layers is not None else default_embedding_layers(editor, entries)
        report["embeddings"] = [
            embed_layer(editor, activations, layer, embedding, max_points, seed) for layer in chosen
        ]
    return report


def _layer_entries(editor: SpectralEditor, meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The metadata's per-layer entries (:data:`RECORDED` keys present), checked against
    the factors' ranks; ranks from the factors where the metadata has no entry."""
    stats = {int(e["layer"]): e for e in meta.get("layer_stats", []) if "layer" in e}
    entries = []
    for layer, (k_pos, k_neg) in editor.ranks.items():
        entry = {k: stats[layer][k] for k in RECORDED if k in stats.get(layer, {})}
        if stats.get(layer) and (entry.get("pos_rank"), entry.get("neg_rank")) != (k_pos, k_neg):
            raise InspectionError(
                f"the editor's metadata gives layer {layer} ranks "
                f"({entry.get('pos_rank')}, {entry.get('neg_rank')}), its factors ({k_pos}, "
                f"{k_neg}): the file is inconsistent"
            )
        entries.append({**entry, "layer": layer, "pos_rank": k_pos, "neg_rank": k_neg})
    return entries


def _signatures(
    editor: SpectralEditor, meta: Mapping[str, Any], entries: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The signature plot's numbers: every candidate layer's of a ``top-signature-L`` fit
    (``layer_selection``), else the fitted layers' (``layer_stats``)."""
    selection = meta.get("layer_selection")
    if isinstance(selection, Mapping) and "signatures" in selection:
        return {
            "source": "layer_selection",
            "rule": selection.get("rule"),
            "layers": list(selection["candidates"]),
            "values": list(selection["signatures"]),
            "chosen": list(selection["chosen"]),
        }
    found = [e for e in entries if "signature" in e]
    return {
        "source": "layer_stats" if found else None,
        "rule": None,
        "layers": [e["layer"] for e in found],
        "values": [e["signature"] for e in found],
        "chosen": list(editor.active_layers),
    }


def default_embedding_layers(
    editor: SpectralEditor, entries: Sequence[Mapping[str, Any]]
) -> list[int]:
    """The active layer of highest signature and the last active layer (one if equal)."""
    active = [e for e in entries if e["layer"] in editor.active_layers]
    if not active:
        return []
    best = max(active, key=lambda e: e.get("signature", float("-inf")))["layer"]
    return sorted({best, editor.active_layers[-1]})


def embed_layer(
    editor: SpectralEditor,
    activations: DemoActivations,
    layer: int,
    embedding: str = "auto",
    max_points: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """One layer's embedding: ``layer``, ``method`` (``tsne``/``pca``), ``reason`` (why
    PCA under ``auto``), ``n`` demonstrations and ``points``: per set of :data:`SETS`
    an ``(n, 2)`` list, from one joint embedding of the ``4 n`` activations."""
    if layer not in editor.layers:
        raise InspectionError(
            f"layer {layer} is not fitted by this editor (layers {editor.layers})"
        )
    if layer not in activations.layers:
        raise InspectionError(
            f"the activations have no layer {layer} (captured layers {activations.layers}); "
            "capture it (sea capture --layers all)"
        )
    if activations.neutral.shape[2] != editor.hidden_size:
        raise InspectionError(
            f"the activations have hidden size {activations.neutral.shape[2]}, the editor "
            f"{editor.hidden_size}: they come from another model"
        )
    j = activations.layers.index(layer)
    rows = {
        name: getattr(activations, name)[:max_points, j].float()
        for name in ("positive", "negative", "neutral")
    }
    with torch.no_grad():
        rows["edited"] = editor.edit(rows["neutral"], layer)
    n = rows["neutral"].shape[0]
    stacked = torch.cat([rows[name] for name in SETS]).double().numpy()
    coords, method, reason = embed(stacked, embedding, seed)
    points = {name: coords[k * n : (k + 1) * n].tolist() for k, name in enumerate(SETS)}
    return {"layer": layer, "method": method, "reason": reason, "n": n, "points": points}


def embed(
    x: np.ndarray, embedding: str = "auto", seed: int = 0
) -> tuple[np.ndarray, str, str | None]:
    """``(coords (m, 2), method, reason)`` of the rows of ``x`` ``(m, D)``: t-SNE or PCA
    (:func:`pca_2d`) as ``embedding`` asks; ``auto`` takes t-SNE unless scikit-learn is
    missing or there are fewer than :data:`MIN_TSNE_POINTS` rows (``reason`` says which).

    Raises:
        MissingExtraError: ``"tsne"`` without scikit-learn.
    """
    if embedding == "pca":
        return pca_2d(x), "pca", None
    if embedding == "auto" and x.shape[0] < MIN_TSNE_POINTS:
        return pca_2d(x), "pca", f"{x.shape[0]} points: too few for t-SNE"
    try:
        manifold = require("sklearn.manifold", "lmeval", "t-SNE embeddings (scikit-learn)")
    except MissingExtraError as error:
        if embedding == "tsne":
            raise
        return pca_2d(x), "pca", f"t-SNE unavailable: {error}"
    perplexity = float(min(30.0, max(2.0, (x.shape[0] - 1) / 3)))
    tsne = manifold.TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return np.asarray(tsne.fit_transform(x), dtype=np.float64), "tsne", None


def pca_2d(x: np.ndarray) -> np.ndarray:
    """The rows of ``x`` ``(m, D)`` on their first two principal components ``(m, 2)``
    (centred; each component's sign fixed so that its largest loading is positive; a
    second column of zeros where the rows span one direction)."""
    centred = torch.as_tensor(x, dtype=torch.float64)
    centred = centred - centred.mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    components = vh[:2]
    signs = torch.sign(components.gather(1, components.abs().argmax(1, keepdim=True)))
    coords = centred @ (components * signs).T
    if coords.shape[1] < 2:
        pad = torch.zeros(coords.shape[0], 2 - coords.shape[1], dtype=coords.dtype)
        coords = torch.cat([coords, pad], 1)
    return coords.numpy()


def write_inspection(report: Mapping[str, Any], out: str | Path) -> dict[str, Path]:
    """``inspect.json`` and the figures (:mod:`~.inspection_plot`: ``signature.png``,
    ``spectrum.png``, ``ranks.png``, ``embedding.png`` with embeddings) into ``out``;
    returns them by name.

    Raises:
        MissingExtraError: matplotlib is not installed (the JSON is written first).
    """
    from .inspection_plot import plot_inspection

    out = Path(out)
    written = {"json": write_json(out / "inspect.json", report)}
    written.update(plot_inspection(report, out))
    return written
