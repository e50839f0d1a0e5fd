"""The frozen SEA editor: per-layer low-rank factors, options, hooks, and its file format.

An editor holds only what inference needs: for each edited layer ``l`` the factors
``U+_l (d, k+_l)`` and ``U-_l (d, k-_l)`` (orthonormal columns), the site, the merge,
the strength α, the feature map with its per-layer scale, the fit-time neutral mean per
layer ``μ_l (d,)`` (in feature space; for the centred edit), which positions are edited,
and descriptive metadata. It is immutable; ``with_options`` returns a changed copy.

File format (``spectral-edit/sea`` version 1, see :mod:`.file_format`): tensors
``layer.{l}.pos`` / ``layer.{l}.neg`` (float32), ``layer.{l}.mean`` where the means were
stored (editors fitted by this release), and a header with the options, the per-layer
scales, the ranks (written for readers only) and ``metadata``; ``center_edit`` and
``positions`` are written only when not at their defaults (the paper's edit), so editors
that do not use them are byte-identical to earlier files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..core.features import compute_dtype, get_feature_map
from ..core.options import Feature, Merge, Positions, Site
from ..core.spectral import EditFactors, apply_edit, dense_projections
from ..hf.hooks import HookHandle
from .base import SiteEditor
from .file_format import EditorFormat, TensorField


@dataclasses.dataclass(frozen=True)
class SpectralEditor(SiteEditor):
    """Immutable SEA editor (see module docstring for shapes)."""

    layers: tuple[int, ...]
    pos_factors: tuple[torch.Tensor, ...]
    neg_factors: tuple[torch.Tensor, ...]
    hidden_size: int
    num_layers: int
    site: Site = Site.RESIDUAL
    merge: Merge = Merge.NORM
    alpha: float = 1.0
    feature: Feature = Feature.LINEAR
    feature_scales: tuple[float, ...] | None = None
    edit_layers: tuple[int, ...] | None = None
    layer_path: str | None = None
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    means: tuple[torch.Tensor, ...] | None = None
    center_edit: bool = False
    positions: Positions = Positions.ALL

    FORMAT = EditorFormat(
        "spectral-edit/sea",
        1,
        header=(
            "layers",
            "hidden_size",
            "num_layers",
            "site",
            "merge",
            "alpha",
            "feature",
            "feature_scales",
            "edit_layers",
            "layer_path",
            "ranks",
            "metadata",
            "center_edit",
            "positions",
        ),
        tensors=(
            TensorField("pos_factors", "layer.{}.pos", per="layers"),
            TensorField("neg_factors", "layer.{}.neg", per="layers"),
            TensorField("means", "layer.{}.mean", per="layers", optional=True),
        ),
        optional=("feature_scales", "edit_layers", "layer_path", "metadata"),
        written_only=("ranks",),
        omitted_at_default=("center_edit", "positions"),
    )

    def __post_init__(self) -> None:
        if len(self.pos_factors) != len(self.layers) or len(self.neg_factors) != len(self.layers):
            raise ValueError("one positive and one negative factor are needed per layer")
        self._check_layers()
        self._check_alpha()
        for layer, pos, neg in zip(self.layers, self.pos_factors, self.neg_factors, strict=True):
            for name, factor in (("pos", pos), ("neg", neg)):
                if factor.ndim != 2 or factor.shape[0] != self.hidden_size or factor.shape[1] < 1:
                    raise ValueError(
                        f"layer {layer} {name} factor has shape {tuple(factor.shape)}, "
                        f"expected ({self.hidden_size}, k>=1)"
                    )
        if self.means is not None and (
            len(self.means) != len(self.layers)
            or any(tuple(m.shape) != (self.hidden_size,) for m in self.means)
        ):
            raise ValueError(f"means must be one ({self.hidden_size},) vector per layer")
        if self.center_edit and self.means is None:
            raise ValueError(
                "the centred edit needs the fit-time neutral means, which this editor lacks "
                "(refit it with this release)"
            )
        object.__setattr__(self, "center_edit", bool(self.center_edit))
        object.__setattr__(self, "positions", Positions.parse(self.positions, "positions"))
        object.__setattr__(self, "merge", Merge.parse(self.merge, "merge"))
        object.__setattr__(self, "feature", get_feature_map(self.feature).name)
        if self.feature is not Feature.LINEAR and (
            self.feature_scales is None or len(self.feature_scales) != len(self.layers)
        ):
            raise ValueError(f"feature {str(self.feature)!r} needs one scale per layer")
        if self.edit_layers is not None and not set(self.edit_layers) <= set(self.layers):
            missing = sorted(set(self.edit_layers) - set(self.layers))
            raise ValueError(f"cannot edit layers {missing}: the editor was not fitted on them")

    # ----------------------------------------------------------------- inspection
    @property
    def active_layers(self) -> tuple[int, ...]:
        """The layers the edit is applied to (a subset of the fitted ``layers``)."""
        return self.layers if self.edit_layers is None else tuple(sorted(self.edit_layers))

    @property
    def ranks(self) -> dict[int, tuple[int, int]]:
        """``{layer: (k+, k-)}``."""
        return {
            layer: (pos.shape[1], neg.shape[1])
            for layer, pos, neg in zip(self.layers, self.pos_factors, self.neg_factors, strict=True)
        }

    def _index(self, layer: int) -> int:
        try:
            return self.layers.index(layer)
        except ValueError:
            raise KeyError(f"layer {layer} is not in this editor (layers {self.layers})") from None

    def factors(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(U+ (d, k+), U- (d, k-))`` of one layer."""
        i = self._index(layer)
        return self.pos_factors[i], self.neg_factors[i]

    def projections(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense ``(P+, P-)`` of one layer, each ``(d, d)`` — for analysis only."""
        return dense_projections(*self.factors(layer))

    def scale(self, layer: int) -> float:
        """The feature-map scale of one layer (1.0 for linear editors)."""
        return 1.0 if self.feature_scales is None else self.feature_scales[self._index(layer)]

    # --------------------------------------------------------------------- options
    def with_options(
        self,
        *,
        alpha: float | None = None,
        merge: Merge | str | None = None,
        layers: Sequence[int] | None = None,
        center_edit: bool | None = None,
        positions: Positions | str | None = None,
    ) -> SpectralEditor:
        """A copy with another strength, merge, subset of the fitted layers to edit,
        centring of the edit, or positions edited."""
        changes: dict[str, Any] = {}
        if center_edit is not None:
            changes["center_edit"] = center_edit
        if positions is not None:
            changes["positions"] = positions
        if alpha is not None:
            changes["alpha"] = float(alpha)
        if merge is not None:
            changes["merge"] = merge
        if layers is not None:
            changes["edit_layers"] = tuple(sorted(set(int(i) for i in layers)))
        return dataclasses.replace(self, **changes)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> SpectralEditor:
        """A copy whose factors live on ``device`` with ``dtype``."""
        means = None if self.means is None else tuple(m.to(device, dtype) for m in self.means)
        return dataclasses.replace(
            self,
            pos_factors=tuple(f.to(device=device, dtype=dtype) for f in self.pos_factors),
            neg_factors=tuple(f.to(device=device, dtype=dtype) for f in self.neg_factors),
            means=means,
        )

    def mean(self, layer: int) -> torch.Tensor | None:
        """The fit-time neutral mean ``(d,)`` of one layer, if stored."""
        return None if self.means is None else self.means[self._index(layer)]

    def _placed(self, layer: int, device: torch.device, dtype: torch.dtype) -> EditFactors:
        """The joined factors of ``layer`` (with μ for the centred edit) on ``device``, in
        the dtype the edit of ``dtype`` activations computes in."""
        pos, neg = self.factors(layer)
        mean = self.mean(layer) if self.center_edit else None
        return EditFactors.join(pos, neg, mean, device=device, dtype=compute_dtype(dtype))

    def edit(
        self, hidden: torch.Tensor, layer: int, placed: EditFactors | None = None
    ) -> torch.Tensor:
        """The edited activations ``(..., d)`` of ``layer`` at every position (pure
        function, no hooks; ``positions`` is the hooks' business).

        ``placed``: the layer's :class:`EditFactors` already on ``hidden``'s device (the
        hooks pass cached ones); default: joined from the editor on each call.
        """
        factors = placed or self._placed(layer, hidden.device, hidden.dtype)
        return apply_edit(
            hidden,
            factors,
            merge=self.merge,
            alpha=self.alpha,
            feature=get_feature_map(self.feature),
            scale=self.scale(layer),
        )

    # ----------------------------------------------------------------- application
    def attach(self, model: nn.Module) -> HookHandle:
        """Edit ``model`` until ``handle.remove()``; factors follow each layer's device/dtype."""
        placed: dict[tuple[int, torch.device, torch.dtype], EditFactors] = {}

        def hook(layer: int, hidden: torch.Tensor) -> torch.Tensor:
            key = (layer, hidden.device, hidden.dtype)
            if key not in placed:
                placed[key] = self._placed(*key)
            return self.edit(hidden, layer, placed[key])

        return self._hook(model, self.active_layers, hook, self.positions)
