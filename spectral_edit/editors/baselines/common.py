"""What the per-layer baseline editors share, so that each piece exists once:

- :func:`activation_pair`: ``(N, L, d)`` positive/negative activations as checked float64
  CPU tensors (ITI uses it too);
- :func:`check_vectors`: the shape check of per-layer ``(d,)`` vectors;
- :func:`layer_format`: the file format of a per-layer editor;
- :class:`LayerEditor`: ``fit`` / ``with_options`` / ``attach`` of the editors that add a
  per-layer edit at a decoder-layer site (mean difference, PCA vector, LEACE), which only
  implement their fit per layer and their edit (saving and loading come from
  :class:`~spectral_edit.editors.base.EditorBase`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self

import numpy as np
import torch
from torch import nn

from ...core.options import Site
from ...hf.hooks import HookHandle
from ..base import SiteEditor
from ..file_format import EDITOR_FIELDS, EditorFormat, TensorField


# ----------------------------------------------------------------------- activations
def as_float64(array: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``array`` (a tensor or anything ``np.asarray`` takes) as a detached float64 CPU
    tensor of the same shape."""
    tensor = array if torch.is_tensor(array) else torch.as_tensor(np.asarray(array))
    return tensor.detach().to("cpu", torch.float64)


def activation_pair(
    positive: torch.Tensor | np.ndarray,
    negative: torch.Tensor | np.ndarray,
    layers: Sequence[int],
    *,
    paired: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N+, L, d)`` and ``(N-, L, d)`` activations as float64 CPU tensors, checked:
    one ``(L, d)``, ``L == len(layers)``, at least one row each, and ``N+ == N-`` if
    ``paired`` (row ``i`` of both is one pair)."""
    pos = as_float64(positive)
    neg = as_float64(negative)
    if pos.ndim != 3 or neg.ndim != 3 or pos.shape[1:] != neg.shape[1:]:
        raise ValueError(
            f"expected (N, L, d) arrays of one shape but for N, got {tuple(pos.shape)} and "
            f"{tuple(neg.shape)}"
        )
    if pos.shape[1] != len(layers):
        raise ValueError(f"{len(layers)} layer ids for arrays with {pos.shape[1]} layers")
    if pos.shape[0] == 0 or neg.shape[0] == 0:
        raise ValueError("need at least one positive and one negative activation")
    if paired and pos.shape[0] != neg.shape[0]:
        raise ValueError(
            f"paired activations need as many positives as negatives, got {pos.shape[0]} "
            f"and {neg.shape[0]}"
        )
    return pos, neg


# ------------------------------------------------------------------------ validation
def check_vectors(
    kind: str, layers: Sequence[int], vectors: Sequence[torch.Tensor], hidden_size: int
) -> None:
    """Raise ``ValueError`` unless every per-layer ``kind`` vector is ``(hidden_size,)``."""
    for layer, vector in zip(layers, vectors, strict=True):
        if tuple(vector.shape) != (hidden_size,):
            raise ValueError(
                f"layer {layer} {kind} has shape {tuple(vector.shape)}, expected ({hidden_size},)"
            )


# ----------------------------------------------------------------------- file format
def layer_format(
    name: str,
    version: int,
    tensors: Sequence[tuple[str, str]],
    scalars: Sequence[str] = (),
) -> EditorFormat:
    """The :class:`EditorFormat` of a :class:`LayerEditor`: the header fields ``layers``,
    ``site``, ``hidden_size``, ``num_layers``, ``alpha``, ``layer_path``, ``metadata``,
    then each per-layer float tuple of ``scalars``; per ``(kind, field)`` of ``tensors``
    one tensor ``layer.{l}.{kind}`` per layer from the tuple field ``field``."""
    return EditorFormat(
        name,
        version,
        header=("layers", "site", *EDITOR_FIELDS, *scalars),
        tensors=tuple(
            TensorField(field, f"layer.{{}}.{kind}", per="layers") for kind, field in tensors
        ),
    )


# ------------------------------------------------------------------- per-layer editors
class LayerEditor(SiteEditor):
    """Mixin for frozen dataclass editors that edit each of ``layers`` at ``site`` with
    per-layer tensors fitted from ``(N, L, d)`` positive and negative activations.

    A subclass declares its fields (``layers``, its per-layer tensor tuples, then
    ``hidden_size``, ``num_layers``, ``site``, ``alpha``, ``layer_path``, ``metadata``),
    its ``FORMAT`` (:func:`layer_format`) and ``_paired``, validates its fields in
    ``__post_init__`` (with :meth:`_check_common`), and implements :meth:`_fit_layers`
    and :meth:`edit`.
    """

    _paired: ClassVar[bool] = False
    """Whether :meth:`fit` needs paired activations (row ``i`` of both is one pair)."""

    def _check_common(self) -> None:
        """Check the layers, the site (parsed into a :class:`Site`) and the strength."""
        self._check_layers()
        self._check_alpha()

    @classmethod
    def fit(
        cls,
        positive: torch.Tensor | np.ndarray,
        negative: torch.Tensor | np.ndarray,
        *,
        layers: Sequence[int],
        num_layers: int,
        alpha: float = 1.0,
        site: Site | str = Site.RESIDUAL,
        layer_path: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Self:
        """Fit from ``(N+, L, d)`` positive and ``(N-, L, d)`` negative activations at
        ``layers`` (``N+ == N-`` and row ``i`` of both one pair if the editor is paired;
        see the class docstring); ``metadata`` is added to what the fit records."""
        pos, neg = activation_pair(positive, negative, layers, paired=cls._paired)
        fields, info = cls._fit_layers(pos, neg)
        fields.update(
            layers=tuple(int(i) for i in layers),
            hidden_size=int(pos.shape[2]),
            num_layers=int(num_layers),
            site=site,
            alpha=float(alpha),
            layer_path=layer_path,
            metadata={**info, **dict(metadata or {})},
        )
        return cls(**fields)

    @classmethod
    def _fit_layers(
        cls, positive: torch.Tensor, negative: torch.Tensor
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """From checked float64 ``(N+, L, d)`` and ``(N-, L, d)`` activations: the
        per-layer fields (one entry per layer, in order) and the fit's metadata."""
        raise NotImplementedError  # pragma: no cover - abstract

    def edit(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        """The edited activations ``(..., d)`` at ``layer``, in their dtype."""
        raise NotImplementedError  # pragma: no cover - abstract

    def with_options(self, *, alpha: float | None = None) -> Self:
        """A copy with another strength."""
        return self if alpha is None else dataclasses.replace(self, alpha=float(alpha))

    def attach(self, model: nn.Module) -> HookHandle:
        """Edit ``model`` (:meth:`edit` at each layer's site) until ``handle.remove()``."""
        return self._hook(model, self.layers, lambda layer, hidden: self.edit(hidden, layer))
