"""Mean-difference steering (activation addition / CAA): add ``α·(mean h+ − mean h-)``.

For each edited layer ``l`` the steering vector ``v_l = mean_i h+_i − mean_i h-_i``
``(d,)`` is the difference of the positive and negative demonstrations' activations at
the site (last token by default, as for SEA). At inference every token's activation at
the site becomes ``h + α v_l``; ``α = 0`` is the unedited model.

File format ``spectral-edit/mean-diff`` version 1: tensors ``layer.{l}.vector`` ``(d,)``
(float32) with the editor's options in the header.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from ...core.options import Site
from .common import LayerEditor, check_vectors, layer_format


@dataclasses.dataclass(frozen=True)
class MeanDifferenceEditor(LayerEditor):
    """Immutable steering-vector editor: one ``(d,)`` vector per layer, fitted from
    ``(N+, L, d)`` positive and ``(N-, L, d)`` negative activations (the counts may
    differ)."""

    layers: tuple[int, ...]
    vectors: tuple[torch.Tensor, ...]
    hidden_size: int
    num_layers: int
    site: Site = Site.RESIDUAL
    alpha: float = 1.0
    layer_path: str | None = None
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    FORMAT = layer_format("spectral-edit/mean-diff", 1, [("vector", "vectors")])

    def __post_init__(self) -> None:
        if len(self.vectors) != len(self.layers):
            raise ValueError("one steering vector is needed per layer")
        self._check_common()
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
