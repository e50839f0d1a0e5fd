"""High-level glue: demonstrations + model → fitted editor (what ``sea fit`` runs)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from ..demos.format import DemoActivations, Demonstration, capture_demos
from ..editors.sea import SpectralEditor
from ..editors.sea_fit import fit_from_arrays
from ..hf.layers import find_decoder_layers, parse_layers


def model_metadata(model: nn.Module) -> dict[str, Any]:
    """Model name and revision for an editor's metadata (best effort, never raises)."""
    from ..hf.models import model_name_of, resolve_revision

    try:
        return {"model": model_name_of(model), "model_revision": resolve_revision(model)}
    except Exception:  # noqa: BLE001 - metadata is descriptive only
        return {"model": type(model).__name__, "model_revision": None}


def fit_from_activations(
    activations: DemoActivations,
    num_layers: int,
    *,
    pos_ratio: float = 0.99,
    neg_ratio: float = 0.99,
    pos_rank: int | None = None,
    neg_rank: int | None = None,
    centered: bool = False,
    feature: str = "linear",
    feature_scales: Sequence[float] | None = None,
    site: str = "residual",
    merge: str = "norm",
    alpha: float = 1.0,
    layer_path: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> SpectralEditor:
    """Fit an editor on captured demonstration activations (cheap: no model pass).

    ``feature_scales``: Φ-SEA scales, one per captured layer (default: the neutral
    activations' RMS per layer)."""
    return fit_from_arrays(
        activations.neutral,
        activations.positive,
        activations.negative,
        layers=activations.layers,
        num_layers=num_layers,
        pos_ratio=pos_ratio,
        neg_ratio=neg_ratio,
        pos_rank=pos_rank,
        neg_rank=neg_rank,
        centered=centered,
        feature=feature,
        feature_scales=feature_scales,
        site=site,
        merge=merge,
        alpha=alpha,
        layer_path=layer_path,
        metadata=metadata,
    )


def fit_editor(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    demos: Sequence[Demonstration],
    *,
    layers: str | Sequence[int] | None = "last-8",
    neutral: str = "generate",
    token: str = "last",
    site: str = "residual",
    batch_size: int = 8,
    layer_path: str | None = None,
    progress: bool = False,
    **fit_options: Any,
) -> SpectralEditor:
    """Capture the demonstrations' activations and fit an editor on them.

    ``layers``: ``"last-L"``, ``"all"``, or explicit indices. ``neutral``: ``generate``
    (the model's greedy answer), ``prompt`` or ``given``. ``fit_options``: ratios or
    ranks, ``centered``, ``feature``, ``feature_scales``, ``merge``, ``alpha``.
    """
    num_layers = len(find_decoder_layers(model, layer_path))
    chosen = parse_layers(layers, num_layers)
    started = time.perf_counter()
    activations = capture_demos(
        model,
        tokenizer,
        demos,
        layers=chosen,
        neutral=neutral,
        site=site,
        token=token,
        batch_size=batch_size,
        layer_path=layer_path,
        progress=progress,
    )
    captured = time.perf_counter()
    metadata = {
        **model_metadata(model),
        "neutral": neutral,
        "token": token,
        "capture_seconds": round(captured - started, 3),
        **fit_options.pop("metadata", {}),
    }
    editor = fit_from_activations(
        activations,
        num_layers,
        site=site,
        layer_path=layer_path,
        metadata=metadata,
        **fit_options,
    )
    return editor
