"""LEACE concept erasure of the positive/negative label (Belrose et al. 2023).

For each edited layer ``l`` an affine eraser is fitted, with the ``concept-erasure``
package's :class:`concept_erasure.LeaceFitter`, on ``X`` ``(N+ + N-, d)`` = the positive
and the negative activations stacked and the scalar label ``Z`` = 1 (positive) / 0
(negative). The eraser is stored as plain tensors, not as the package's object:

- ``mean`` ``μ`` ``(d,)``: the mean of ``X`` (the eraser's ``bias``);
- ``proj_left`` ``A`` ``(d, k)`` and ``proj_right`` ``B`` ``(k, d)``: the low-rank factors
  of the erasure, ``P = I − A B`` (``k = 1`` for a binary label; a column of ``A`` is zero
  when the package found no label signal above its ``svd_tol``).

The erased activation is ``r(h) = h − A B (h − μ)``. At inference every token's activation
at the site becomes ``h − α·A B (h − μ)`` (computed in float32, returned in the hidden's
dtype): ``α = 1`` is exact erasure, ``α = 0`` returns the activation itself (bit-identical),
and in between the gap between the class means shrinks linearly to ``(1 − α)`` of itself.

What LEACE guarantees, on the distribution it was fitted on (here the training
activations): after erasure no linear classifier can predict the label better than a
constant (equivalently, the erased activations are uncorrelated with the label, so the
class-conditional means coincide), and among all affine erasures with that property it is
the least-squares-smallest change (smallest expected ``‖r(h) − h‖²``; with the package's
covariance shrinkage, minimal with respect to the shrunk covariance estimate, while the
erasure itself stays exact).
The correction only moves activations along the cross-covariance direction (the
difference of the class means); components orthogonal to it are untouched.

Caveats: the eraser is fitted on one token per demonstration (the last token by default,
as for SEA) but applied at every token of the layer's site, where the guarantee does not
formally hold. The package's covariance shrinkage is kept (its default; needed when
``2N < d``), and its ``constrain_cov_trace`` safeguard is disabled: for a binary label the
LEACE map cannot raise the covariance trace (the change is ``−uᵀΣu``), so the safeguard
never applies in exact arithmetic, and disabling it keeps the erasure exact and rank one.

File format ``spectral-edit/leace`` version 1: tensors ``layer.{l}.mean``,
``layer.{l}.proj_left``, ``layer.{l}.proj_right`` (float32) with the editor's options in
the header.

Fitting needs the ``concept-erasure`` package (the ``baselines`` extra), imported when a
fit runs; loading and applying a saved editor do not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from ...core.options import Site
from ...util.extras import require
from .common import LayerEditor, layer_format


def fit_eraser(
    positive: torch.Tensor, negative: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LEACE factors ``(μ (d,), A (d, k), B (k, d))`` (float64) erasing the label from
    positive ``(N+, d)`` and negative ``(N-, d)`` activations."""
    x = torch.cat([positive, negative]).double()
    z = torch.cat([torch.ones(len(positive)), torch.zeros(len(negative))]).double()
    fitter = require("concept_erasure", "baselines", "LEACE").LeaceFitter
    eraser = fitter.fit(x, z, constrain_cov_trace=False).eraser
    assert eraser.bias is not None  # affine=True (the default) always has a bias
    return eraser.bias, eraser.proj_left, eraser.proj_right


@dataclasses.dataclass(frozen=True)
class LeaceEditor(LayerEditor):
    """Immutable LEACE editor: per layer the mean ``(d,)`` and the factors ``(d, k)``,
    ``(k, d)`` of the eraser (see the module docstring), fitted from ``(N+, L, d)``
    positive and ``(N-, L, d)`` negative activations (the counts may differ)."""

    layers: tuple[int, ...]
    means: tuple[torch.Tensor, ...]
    proj_left: tuple[torch.Tensor, ...]
    proj_right: tuple[torch.Tensor, ...]
    hidden_size: int
    num_layers: int
    site: Site = Site.RESIDUAL
    alpha: float = 1.0
    layer_path: str | None = None
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    FORMAT = layer_format(
        "spectral-edit/leace",
        1,
        [("mean", "means"), ("proj_left", "proj_left"), ("proj_right", "proj_right")],
    )

    def __post_init__(self) -> None:
        count = len(self.layers)
        if not len(self.means) == len(self.proj_left) == len(self.proj_right) == count:
            raise ValueError("one mean, proj_left and proj_right are needed per layer")
        self._check_common()
        d = self.hidden_size
        for layer, mean, left, right in zip(
            self.layers, self.means, self.proj_left, self.proj_right, strict=True
        ):
            k = left.shape[1] if left.ndim == 2 else -1
            shapes = (tuple(mean.shape), tuple(left.shape), tuple(right.shape))
            if k < 1 or shapes != ((d,), (d, k), (k, d)):
                raise ValueError(
                    f"layer {layer} eraser has mean/proj_left/proj_right shapes {shapes}, "
                    f"expected ({d},), ({d}, k), (k, {d}) with k >= 1"
                )
            if not all(bool(t.isfinite().all()) for t in (mean, left, right)):
                raise ValueError(f"layer {layer} eraser has non-finite entries")

    @classmethod
    def _fit_layers(
        cls, positive: torch.Tensor, negative: torch.Tensor
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """:func:`fit_eraser` at each layer, stored as contiguous float32 factors."""
        fitted = [fit_eraser(positive[:, i], negative[:, i]) for i in range(positive.shape[1])]
        fields = {
            "means": tuple(mean.float().contiguous() for mean, _, _ in fitted),
            "proj_left": tuple(left.float().contiguous() for _, left, _ in fitted),
            "proj_right": tuple(right.float().contiguous() for _, _, right in fitted),
        }
        info = {
            "n_positive": int(positive.shape[0]),
            "n_negative": int(negative.shape[0]),
            "erased_rank": [int(left.norm(dim=0).gt(0).sum()) for _, left, _ in fitted],
        }
        return fields, info

    def correction(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        """``A B (h − μ)`` for activations ``(..., d)``, in float32 on their device."""
        index = self.layers.index(layer)
        device = hidden.device
        mean, left, right = (
            t.to(device=device, dtype=torch.float32)
            for t in (self.means[index], self.proj_left[index], self.proj_right[index])
        )
        return ((hidden.to(torch.float32) - mean) @ right.T) @ left.T

    def edit(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        """``h − α A B (h − μ)`` for activations ``(..., d)``, in their dtype; ``α = 0``
        returns ``hidden`` itself."""
        if self.alpha == 0.0:
            return hidden
        erased = hidden.to(torch.float32) - self.alpha * self.correction(hidden, layer)
        return erased.to(hidden.dtype)
