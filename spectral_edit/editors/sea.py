"""The frozen SEA editor: per-layer low-rank factors, options, hooks, and its file format.

An editor holds only what inference needs: for each edited layer ``l`` the factors
``U+_l (d, k+_l)`` and ``U-_l (d, k-_l)`` (orthonormal columns), the site, the merge,
the strength α, the feature map with its per-layer scale, and descriptive metadata.
It is immutable; ``with_options`` returns a changed copy.

File format (one ``.safetensors`` file): tensors ``layer.{l}.pos`` / ``layer.{l}.neg``
(float32) and the safetensors metadata key ``spectral_edit`` holding a JSON object with
``format``, ``format_version``, the options, the per-layer scales and ``metadata``, and
``content_sha256`` over the tensors and options.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.features import FEATURE_NAMES, get_feature_map
from ..core.spectral import MERGES, dense_projections, spectral_edit
from ..hf.hooks import HookHandle
from ..hf.layers import SITES
from .base import EditorBase
from .file_format import EditorFileError, read_editor_file, write_editor_file

FORMAT_NAME = "spectral-edit/sea"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class SpectralEditor(EditorBase):
    """Immutable SEA editor (see module docstring for shapes)."""

    layers: tuple[int, ...]
    pos_factors: tuple[torch.Tensor, ...]
    neg_factors: tuple[torch.Tensor, ...]
    hidden_size: int
    num_layers: int
    site: str = "residual"
    merge: str = "norm"
    alpha: float = 1.0
    feature: str = "linear"
    feature_scales: tuple[float, ...] | None = None
    edit_layers: tuple[int, ...] | None = None
    layer_path: str | None = None
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.pos_factors) != len(self.layers) or len(self.neg_factors) != len(self.layers):
            raise ValueError("one positive and one negative factor are needed per layer")
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"duplicate layers in {self.layers}")
        for layer, pos, neg in zip(self.layers, self.pos_factors, self.neg_factors, strict=True):
            if not 0 <= layer < self.num_layers:
                raise ValueError(f"layer {layer} out of range for {self.num_layers} layers")
            for name, factor in (("pos", pos), ("neg", neg)):
                if factor.ndim != 2 or factor.shape[0] != self.hidden_size or factor.shape[1] < 1:
                    raise ValueError(
                        f"layer {layer} {name} factor has shape {tuple(factor.shape)}, "
                        f"expected ({self.hidden_size}, k>=1)"
                    )
        if self.site not in SITES:
            raise ValueError(f"site must be one of {SITES}, not {self.site!r}")
        if self.merge not in MERGES:
            raise ValueError(f"merge must be one of {MERGES}, not {self.merge!r}")
        get_feature_map(self.feature)
        if self.feature != "linear" and (
            self.feature_scales is None or len(self.feature_scales) != len(self.layers)
        ):
            raise ValueError(f"feature {self.feature!r} needs one scale per layer")
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
        merge: str | None = None,
        layers: Sequence[int] | None = None,
    ) -> SpectralEditor:
        """A copy with another strength, merge, or subset of the fitted layers to edit."""
        changes: dict[str, Any] = {}
        if alpha is not None:
            changes["alpha"] = float(alpha)
        if merge is not None:
            changes["merge"] = merge
        if layers is not None:
            changes["edit_layers"] = tuple(sorted(set(int(i) for i in layers)))
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """A copy whose factors live on ``device`` with ``dtype``."""
        return dataclasses.replace(
            self,
            pos_factors=tuple(f.to(device=device, dtype=dtype) for f in self.pos_factors),
            neg_factors=tuple(f.to(device=device, dtype=dtype) for f in self.neg_factors),
        )

    def edit(
        self,
        hidden: torch.Tensor,
        layer: int,
        factors: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The edited activations ``(..., d)`` of ``layer`` (pure function, no hooks).

        ``factors``: the layer's ``(U+, U-)`` already on ``hidden``'s device (the hooks
        pass cached copies); default: moved from the editor on each call.
        """
        pos, neg = factors or (f.to(hidden.device) for f in self.factors(layer))
        return spectral_edit(
            hidden,
            pos,
            neg,
            merge=self.merge,
            alpha=self.alpha,
            feature=get_feature_map(self.feature),
            scale=self.scale(layer),
        )

    # ----------------------------------------------------------------- application
    def attach(self, model: nn.Module) -> HookHandle:
        """Edit ``model`` until ``handle.remove()``; factors follow each layer's device/dtype."""
        placed: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

        def hook(layer: int, hidden: torch.Tensor) -> torch.Tensor:
            key = (layer, hidden.device)
            if key not in placed:
                placed[key] = tuple(f.to(hidden.device) for f in self.factors(layer))
            return self.edit(hidden, layer, placed[key])

        return self._hook(model, self.active_layers, hook)

    # ------------------------------------------------------------------- file I/O
    def _header(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "layers": list(self.layers),
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "site": self.site,
            "merge": self.merge,
            "alpha": self.alpha,
            "feature": self.feature,
            "feature_scales": None if self.feature_scales is None else list(self.feature_scales),
            "edit_layers": None if self.edit_layers is None else list(self.edit_layers),
            "layer_path": self.layer_path,
            "ranks": {str(k): list(v) for k, v in self.ranks.items()},
            "metadata": dict(self.metadata),
        }

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {}
        for layer, pos, neg in zip(self.layers, self.pos_factors, self.neg_factors, strict=True):
            tensors[f"layer.{layer}.pos"] = pos.detach().to("cpu", torch.float32).contiguous()
            tensors[f"layer.{layer}.neg"] = neg.detach().to("cpu", torch.float32).contiguous()
        return tensors

    def save(self, path: str | Path) -> Path:
        """Write the editor to one ``.safetensors`` file, atomically."""
        return write_editor_file(path, self._tensors(), self._header())

    @classmethod
    def load(cls, path: str | Path, model: nn.Module | None = None) -> SpectralEditor:
        """Read and validate an editor file; with ``model``, also check it fits the model."""
        path = Path(path)
        header, tensors = read_editor_file(path, FORMAT_NAME, FORMAT_VERSION, _REQUIRED)
        editor = _from_header(path, header, tensors)
        if model is not None:
            try:
                editor.check_model(model)
            except EditorFileError as error:
                raise EditorFileError(f"{path}: {error}") from None
        return editor


_REQUIRED = ("layers", "hidden_size", "num_layers", "site", "merge", "alpha", "feature")


def _from_header(path: Path, header: Any, tensors: dict[str, torch.Tensor]) -> SpectralEditor:
    if header["feature"] not in FEATURE_NAMES:
        raise EditorFileError(f"{path}: unknown feature map {header['feature']!r}")
    expected = {f"layer.{layer}.{kind}" for layer in header["layers"] for kind in ("pos", "neg")}
    if set(tensors) != expected:
        raise EditorFileError(
            f"{path}: tensors {sorted(tensors)} do not match layers {header['layers']}"
        )
    scales = header.get("feature_scales")
    edit_layers = header.get("edit_layers")
    try:
        return SpectralEditor(
            layers=tuple(header["layers"]),
            pos_factors=tuple(tensors[f"layer.{layer}.pos"] for layer in header["layers"]),
            neg_factors=tuple(tensors[f"layer.{layer}.neg"] for layer in header["layers"]),
            hidden_size=int(header["hidden_size"]),
            num_layers=int(header["num_layers"]),
            site=header["site"],
            merge=header["merge"],
            alpha=float(header["alpha"]),
            feature=header["feature"],
            feature_scales=None if scales is None else tuple(float(s) for s in scales),
            edit_layers=None if edit_layers is None else tuple(edit_layers),
            layer_path=header.get("layer_path"),
            metadata=header.get("metadata", {}),
        )
    except (ValueError, TypeError) as error:
        raise EditorFileError(f"{path}: invalid editor: {error}") from error
