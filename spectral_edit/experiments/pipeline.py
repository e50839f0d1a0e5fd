"""High-level glue: demonstrations + model → fitted editor (what ``sea fit`` runs)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..core.options import SeaOptions
from ..demos.activations import DemoActivations, capture_demos
from ..demos.format import Demonstration
from ..editors.sea import SpectralEditor
from ..editors.sea_fit import fit_from_arrays
from ..hf.layers import find_decoder_layers, parse_layers

DEFAULT_OPTIONS = SeaOptions()


def model_metadata(model: nn.Module) -> dict[str, Any]:
    """Model name and revision for an editor's metadata (best effort, never raises)."""
    from ..hf.models import model_name_of, resolve_revision

    if isinstance(model, PreTrainedModel):
        try:
            return {"model": model_name_of(model), "model_revision": resolve_revision(model)}
        except Exception:  # noqa: BLE001 - metadata is descriptive only
            pass
    return {"model": type(model).__name__, "model_revision": None}


def fit_from_activations(
    activations: DemoActivations,
    num_layers: int,
    options: SeaOptions = DEFAULT_OPTIONS,
    *,
    metadata: Mapping[str, Any] | None = None,
) -> SpectralEditor:
    """Fit an editor on captured demonstration activations (cheap: no model pass).

    The capture options of ``options`` (layers, neutral, token) are not used here: the
    activations already hold them. ``options.feature_scales``: Φ-SEA scales, one per
    captured layer (default: the neutral activations' RMS per layer)."""
    return fit_from_arrays(
        activations.neutral,
        activations.positive,
        activations.negative,
        layers=activations.layers,
        num_layers=num_layers,
        metadata=dict(metadata or {}),
        **options.fit_kwargs(),
    )


def fit_editor(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    demos: Sequence[Demonstration],
    options: SeaOptions = DEFAULT_OPTIONS,
    *,
    batch_size: int = 8,
    progress: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> SpectralEditor:
    """Capture the demonstrations' activations at ``options.layers`` and fit an editor.

    ``metadata`` is added to the editor's (after the model's name and revision, the
    neutral and token options and the capture time).
    """
    num_layers = len(find_decoder_layers(model, options.layer_path))
    chosen = parse_layers(options.layers, num_layers)
    started = time.perf_counter()
    activations = capture_demos(
        model,
        tokenizer,
        demos,
        layers=chosen,
        neutral=options.neutral,
        site=options.site,
        token=options.token,
        batch_size=batch_size,
        layer_path=options.layer_path,
        progress=progress,
    )
    captured = time.perf_counter()
    info = {
        **model_metadata(model),
        "neutral": str(options.neutral),
        "token": str(options.token),
        "capture_seconds": round(captured - started, 3),
        **dict(metadata or {}),
    }
    return fit_from_activations(activations, num_layers, options, metadata=info)
