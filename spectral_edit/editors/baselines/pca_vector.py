"""PCA control vectors (repeng's ``read_representations`` with ``method="pca_diff"``).

For each edited layer ``l``, with paired activations ``h+_i, h-_i`` ``(d,)`` of the same
prompt answered positively and negatively (last token by default, as for SEA):

- ``D`` ``(N, d)``: the paired differences ``d_i = h+_i − h-_i``;
- ``u_l`` ``(d,)``: the unit first principal component of ``D`` *after centring* (as
  scikit-learn's ``PCA`` in repeng 0.4.0 does), computed with an SVD in float64;
- its sign: positives project above their negatives (``d_i · u > 0``) for the majority of
  pairs, as in repeng; a tie (repeng keeps scikit-learn's arbitrary sign) is broken
  deterministically towards ``mean_i d_i · u >= 0``;
- ``s_l = mean_i d_i · u_l``: the scale, so that ``α = 1`` moves an activation along
  ``u_l`` by the typical paired difference, comparable to mean-difference steering (``s_l``
  is the component of the mean difference along ``u_l``; it may be negative when the
  majority and the mean disagree).

At inference every token's activation at the site becomes ``h + α s_l u_l``; ``α = 0`` is
the unedited model. ``metadata["explained_variance"]`` lists, per layer (in ``layers``
order), the fraction of the centred differences' variance the first component explains.

Because the differences are centred, a perfectly consistent contrast (all ``d_i`` equal)
has no principal direction; :meth:`PCAVectorEditor.fit` refuses it.

File format ``spectral-edit/pca-vector`` version 1: tensors ``layer.{l}.direction``
``(d,)`` (float32), and the header's ``scales`` (one float per layer) with the editor's
options.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch

from ...core.options import Site
from .common import LayerEditor, check_vectors, layer_format

_UNIT_TOLERANCE = 1e-3
_DEGENERATE = 1e-10


# ------------------------------------------------------------------------- the PCA fit
def pca_direction(differences: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """repeng's ``pca_diff`` direction of paired differences ``(N, d)`` (float64).

    Returns ``(u, s, explained)``: the unit first principal component of the centred
    differences ``(d,)`` signed so that most pairs have ``d_i · u > 0`` (ties: towards a
    non-negative mean), the mean projection ``s = mean_i d_i · u``, and the fraction of
    the centred variance that component explains. Raises ``ValueError`` when the
    centred differences vanish (fewer than two pairs, or all differences equal).
    """
    if differences.shape[0] < 2:
        raise ValueError("the PCA of paired differences needs at least 2 pairs")
    centred = differences - differences.mean(0)
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    largest = float(differences.norm(dim=1).max())
    if not singular[0] > _DEGENERATE * max(largest, 1e-300):
        raise ValueError(
            "the paired differences do not vary (all equal after centring), so they have "
            "no first principal component; use mean-difference steering instead"
        )
    direction = vh[0]
    projections = differences @ direction
    larger = int((projections > 0).sum())
    smaller = int((projections < 0).sum())
    if smaller > larger or (smaller == larger and projections.mean() < 0):
        direction, projections = -direction, -projections
    explained = float(singular[0] ** 2 / (singular**2).sum())
    return direction, float(projections.mean()), explained


@dataclasses.dataclass(frozen=True)
class PCAVectorEditor(LayerEditor):
    """Immutable PCA control-vector editor: a unit ``(d,)`` direction and a scale per layer
    (see the module docstring), fitted from paired ``(N, L, d)`` positive and negative
    activations (row ``i`` of both arrays is one demonstration; ``N >= 2``)."""

    layers: tuple[int, ...]
    directions: tuple[torch.Tensor, ...]
    scales: tuple[float, ...]
    hidden_size: int
    num_layers: int
    site: Site = Site.RESIDUAL
    alpha: float = 1.0
    layer_path: str | None = None
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    FORMAT = layer_format(
        "spectral-edit/pca-vector", 1, [("direction", "directions")], scalars=("scales",)
    )
    _paired = True

    def __post_init__(self) -> None:
        if len(self.directions) != len(self.layers) or len(self.scales) != len(self.layers):
            raise ValueError("one direction and one scale are needed per layer")
        self._check_common()
        check_vectors("direction", self.layers, self.directions, self.hidden_size)
        for layer, direction, scale in zip(self.layers, self.directions, self.scales, strict=True):
            norm = float(direction.double().norm())
            if not abs(norm - 1.0) <= _UNIT_TOLERANCE:
                raise ValueError(f"layer {layer} direction has norm {norm:.6g}, expected 1")
            if not math.isfinite(scale):
                raise ValueError(f"layer {layer} scale {scale} is not finite")

    @classmethod
    def _fit_layers(
        cls, positive: torch.Tensor, negative: torch.Tensor
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """:func:`pca_direction` of each layer's paired differences."""
        fitted = [pca_direction(positive[:, i] - negative[:, i]) for i in range(positive.shape[1])]
        fields = {
            "directions": tuple(direction.float() for direction, _, _ in fitted),
            "scales": tuple(scale for _, scale, _ in fitted),
        }
        info = {
            "n_demonstrations": int(positive.shape[0]),
            "explained_variance": [explained for _, _, explained in fitted],
        }
        return fields, info

    def vector(self, layer: int) -> torch.Tensor:
        """The ``(d,)`` float32 shift ``α s u`` added at ``layer``."""
        index = self.layers.index(layer)
        return (self.alpha * self.scales[index]) * self.directions[index].float()

    def edit(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        """``hidden + α s u`` for activations ``(..., d)``, in their dtype."""
        return hidden + self.vector(layer).to(device=hidden.device, dtype=hidden.dtype)
