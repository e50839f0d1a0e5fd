"""Mean-difference steering (activation addition / CAA): add ``α·(mean h+ − mean h-)``.

For each edited layer ``l`` the steering vector ``v_l = mean_i h+_i − mean_i h-_i``
``(d,)`` is the difference of the positive and negative demonstrations' activations at
the site (last token by default, as for SEA). At inference every token's activation at
the site becomes ``h + α v_l``; ``α = 0`` is the unedited model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..editor_base import EditorBase
from ..editor_file import EditorFileError, read_editor_file, write_editor_file
from ..hooks import HookHandle
from ..layers import SITES

FORMAT_NAME = "spectral-edit/mean-diff"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class MeanDifferenceEditor(EditorBase):
    """Immutable steering-vector editor: one ``(d,)`` vector per layer."""

    layers: tuple[int, ...]
    vectors: tuple[torch.Tensor, ...]
    hidden_size: int
    num_layers: int
    site: str = "residual"
    alpha: float = 1.0
    layer_path: str | None = None
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.vectors) != len(self.layers):
            raise ValueError("one steering vector is needed per layer")
        for layer, vector in zip(self.layers, self.vectors, strict=True):
            if not 0 <= layer < self.num_layers:
                raise ValueError(f"layer {layer} out of range for {self.num_layers} layers")
            if tuple(vector.shape) != (self.hidden_size,):
                raise ValueError(
                    f"layer {layer} vector has shape {tuple(vector.shape)}, "
                    f"expected ({self.hidden_size},)"
                )
        if self.site not in SITES:
            raise ValueError(f"site must be one of {SITES}, not {self.site!r}")

    @classmethod
    def fit(
        cls,
        positive: torch.Tensor | np.ndarray,
        negative: torch.Tensor | np.ndarray,
        *,
        layers: Sequence[int],
        num_layers: int,
        alpha: float = 1.0,
        site: str = "residual",
        layer_path: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> MeanDifferenceEditor:
        """Steering vectors from ``(N, L, d)`` positive and negative activations."""
        pos = torch.as_tensor(np.asarray(positive) if not torch.is_tensor(positive) else positive)
        neg = torch.as_tensor(np.asarray(negative) if not torch.is_tensor(negative) else negative)
        if pos.ndim != 3 or neg.ndim != 3 or pos.shape[1:] != neg.shape[1:]:
            raise ValueError(
                f"expected (N, L, d) arrays of one width, got {tuple(pos.shape)} and "
                f"{tuple(neg.shape)}"
            )
        if pos.shape[1] != len(layers):
            raise ValueError(f"{len(layers)} layer ids for arrays with {pos.shape[1]} layers")
        diff = pos.double().mean(0) - neg.double().mean(0)  # (L, d)
        return cls(
            layers=tuple(int(i) for i in layers),
            vectors=tuple(row.float() for row in diff),
            hidden_size=int(pos.shape[2]),
            num_layers=int(num_layers),
            site=site,
            alpha=float(alpha),
            layer_path=layer_path,
            metadata={"n_demonstrations": int(pos.shape[0]), **dict(metadata or {})},
        )

    def with_options(self, *, alpha: float | None = None) -> MeanDifferenceEditor:
        """A copy with another strength."""
        return self if alpha is None else dataclasses.replace(self, alpha=float(alpha))

    def edit(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        """``hidden + α v_layer`` for activations ``(..., d)``, in their dtype."""
        vector = self.vectors[self.layers.index(layer)]
        return hidden + (self.alpha * vector).to(device=hidden.device, dtype=hidden.dtype)

    def attach(self, model: nn.Module) -> HookHandle:
        """Steer ``model`` until ``handle.remove()``."""
        return self._hook(model, self.layers, lambda layer, hidden: self.edit(hidden, layer))

    def save(self, path: str | Path) -> Path:
        """Write the editor to one ``.safetensors`` file, atomically."""
        header = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "layers": list(self.layers),
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "site": self.site,
            "alpha": self.alpha,
            "layer_path": self.layer_path,
            "metadata": dict(self.metadata),
        }
        tensors = {
            f"layer.{layer}.vector": vector
            for layer, vector in zip(self.layers, self.vectors, strict=True)
        }
        return write_editor_file(path, tensors, header)

    @classmethod
    def load(cls, path: str | Path, model: nn.Module | None = None) -> MeanDifferenceEditor:
        """Read and validate a mean-difference editor file (and its fit to ``model``)."""
        path = Path(path)
        required = ("layers", "hidden_size", "num_layers", "site", "alpha")
        header, tensors = read_editor_file(path, FORMAT_NAME, FORMAT_VERSION, required)
        names = [f"layer.{layer}.vector" for layer in header["layers"]]
        if set(tensors) != set(names):
            raise EditorFileError(f"{path}: tensors {sorted(tensors)} do not match the layers")
        try:
            editor = cls(
                layers=tuple(header["layers"]),
                vectors=tuple(tensors[name] for name in names),
                hidden_size=int(header["hidden_size"]),
                num_layers=int(header["num_layers"]),
                site=header["site"],
                alpha=float(header["alpha"]),
                layer_path=header.get("layer_path"),
                metadata=header.get("metadata", {}),
            )
            if model is not None:
                editor.check_model(model)
        except (ValueError, TypeError) as error:
            raise EditorFileError(f"{path}: {error}") from error
        return editor
