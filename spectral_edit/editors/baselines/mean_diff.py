"""Mean-difference steering (activation addition / CAA): add ``α·(mean h+ − mean h-)``.

For each edited layer ``l`` the steering vector ``v_l = mean_i h+_i − mean_i h-_i``
``(d,)`` is the difference of the positive and negative demonstrations' activations at
the site (last token by default, as for SEA). At inference every token's activation at
the site becomes ``h + α v_l``; ``α = 0`` is the unedited model.

File format: tensors ``layer.{l}.vector`` ``(d,)`` (float32) with the editor's options in
the header.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from .common import LayerEditor, check_layers, check_vectors

FORMAT_NAME = "spectral-edit/mean-diff"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class MeanDifferenceEditor(LayerEditor):
    """Immutable steering-vector editor: one ``(d,)`` vector per layer, fitted from
    ``(N+, L, d)`` positive and ``(N-, L, d)`` negative activations (the counts may
    differ)."""

    layers: tuple[int, ...]
    vectors: tuple[torch.Tensor, ...]
    hidden_size: int
    num_layers: int
    site: str = "residual"
    alpha: float = 1.0
    layer_path: str | None = None
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    _format = (FORMAT_NAME, FORMAT_VERSION)
    _tensors = (("vector", "vectors"),)

    def __post_init__(self) -> None:
        if len(self.vectors) != len(self.layers):
            raise ValueError("one steering vector is needed per layer")
        check_layers(self.layers, self.num_layers, self.site)
        check_vectors("vector", self.layers, self.vectors, self.hidden_size)

    @classmethod
    def _fit_layers(
        cls, positive: torch.Tensor, negative: torch.Tensor
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Steering vectors: the differences of the float64 means, as float32."""
        diff = positive.mean(0) - negative.mean(0)  # (L, d)
        vectors = tuple(row.float() for row in diff)
        return {"vectors": vectors}, {"n_demonstrations": int(positive.shape[0])}

    def edit(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        """``hidden + α v_layer`` for activations ``(..., d)``, in their dtype."""
        vector = self.vectors[self.layers.index(layer)]
        return hidden + (self.alpha * vector).to(device=hidden.device, dtype=hidden.dtype)
