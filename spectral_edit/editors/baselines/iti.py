"""Inference-Time Intervention (ITI; Li et al., 2023): shift the most telling attention heads.

The per-head attention outputs of layer ``l`` are the slices of the input of its attention
output projection (``o_proj``, ``c_proj``, ``dense``, ``out_proj``): a vector of width
``H·hd`` whose head ``h`` is ``[h·hd, (h+1)·hd)``. Fitting reads them at the last token of
``prompt + positive`` and ``prompt + negative`` for every demonstration, then

1. trains, for every (layer, head), an L2-regularised logistic-regression probe separating
   positive from negative on a seeded train split of the demonstrations (a demonstration's
   positive and negative fall in the same split) and scores its accuracy on the rest;
2. keeps the ``top_k`` heads of best validation accuracy (ties: lower validation log-loss,
   then lower layer, then lower head index);
3. gives each kept head the unit mass-mean direction ``θ = normalise(mean h+ − mean h-)``
   (over all demonstrations; the paper's best variant) and the spread ``σ`` = standard
   deviation of all its positive and negative activations projected on ``θ``.

At inference every token's head slice becomes ``h + α σ θ`` (a forward pre-hook on the
output projection); ``α = 0`` is the unedited model. The probe training lives in
:mod:`.iti_train`; this module holds the frozen editor.

File format ``spectral-edit/iti`` version 1: tensors ``directions`` ``(K, hd)`` and
``sigmas`` ``(K,)`` (float32), the heads and the head shape in the header.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ...demos.format import Demonstration
from ...demos.prompts import PLAIN, PromptFormat
from ...hf.hooks import HookHandle
from ...hf.layers import attention_head_shape, find_decoder_layers, hidden_size_of, parse_layers
from ..base import EditorBase
from ..file_format import EDITOR_FIELDS, EditorFileError, EditorFormat, TensorField
from .iti_train import Head, head_activations, head_projections, select_heads


@dataclasses.dataclass(frozen=True, eq=False)
class ITIEditor(EditorBase):
    """Immutable ITI editor: ``K`` selected heads, best first, each with a unit direction
    ``(head_dim,)`` and a spread ``σ``; the edit adds ``α σ_k θ_k`` to head ``k``'s slice."""

    heads: tuple[Head, ...]
    directions: torch.Tensor
    """``(K, head_dim)`` float32, unit rows, in the order of :attr:`heads`."""
    sigmas: torch.Tensor
    """``(K,)`` float32, ``σ_k >= 0``."""
    num_heads: int
    head_dim: int
    hidden_size: int
    num_layers: int
    alpha: float = 5.0
    layer_path: str | None = None
    attn_path: str | None = None
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    FORMAT = EditorFormat(
        "spectral-edit/iti",
        1,
        header=("heads", "num_heads", "head_dim", "attn_path", *EDITOR_FIELDS),
        tensors=(TensorField("directions", "directions"), TensorField("sigmas", "sigmas")),
        optional=("attn_path", "layer_path", "metadata"),
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", tuple((int(lay), int(h)) for lay, h in self.heads))
        if not self.heads:
            raise ValueError("an ITI editor needs at least one head")
        self._check_alpha()
        if len(set(self.heads)) != len(self.heads):
            raise ValueError(f"heads must be distinct, got {self.heads}")
        for layer, head in self.heads:
            if not 0 <= layer < self.num_layers or not 0 <= head < self.num_heads:
                raise ValueError(
                    f"head ({layer}, {head}) out of range for {self.num_layers} layers of "
                    f"{self.num_heads} heads"
                )
        if tuple(self.directions.shape) != (len(self.heads), self.head_dim):
            raise ValueError(
                f"directions have shape {tuple(self.directions.shape)}, expected "
                f"({len(self.heads)}, {self.head_dim})"
            )
        if tuple(self.sigmas.shape) != (len(self.heads),):
            raise ValueError(
                f"sigmas have shape {tuple(self.sigmas.shape)}, expected ({len(self.heads)},)"
            )

    @property
    def top_k(self) -> int:
        """The number of edited heads ``K``."""
        return len(self.heads)

    @property
    def layers(self) -> tuple[int, ...]:
        """The sorted layers holding at least one edited head."""
        return tuple(sorted({layer for layer, _ in self.heads}))

    @classmethod
    def fit(
        cls,
        positive: torch.Tensor | np.ndarray,
        negative: torch.Tensor | np.ndarray,
        *,
        layers: Sequence[int],
        num_heads: int,
        head_dim: int,
        hidden_size: int,
        num_layers: int,
        top_k: int = 16,
        alpha: float = 5.0,
        val_fraction: float = 0.2,
        seed: int = 0,
        C: float = 1.0,  # noqa: N803 - scikit-learn's name for the inverse L2 strength
        layer_path: str | None = None,
        attn_path: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> ITIEditor:
        """Fit from ``(N, L, H·hd)`` head activations of N demonstrations at ``layers``.

        Row ``i`` of ``positive`` and of ``negative`` is demonstration ``i``. ``top_k``
        larger than ``L·H`` keeps every head. ``C``: inverse L2 strength of the probes (as
        in scikit-learn, whose default the paper used). Probe accuracies of all ``(L, H)``
        heads are kept in ``metadata["probe_accuracy"]``.
        """
        selected = select_heads(
            positive,
            negative,
            layers=layers,
            num_heads=num_heads,
            head_dim=head_dim,
            top_k=top_k,
            val_fraction=val_fraction,
            seed=seed,
            C=C,
        )
        return cls(
            heads=selected.heads,
            directions=selected.directions.float(),
            sigmas=selected.sigmas.float(),
            num_heads=int(num_heads),
            head_dim=int(head_dim),
            hidden_size=int(hidden_size),
            num_layers=int(num_layers),
            alpha=float(alpha),
            layer_path=layer_path,
            attn_path=attn_path,
            metadata={**selected.info, **dict(metadata or {})},
        )

    @classmethod
    def fit_model(
        cls,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        demos: Sequence[Demonstration],
        *,
        top_k: int = 16,
        alpha: float = 5.0,
        layers: str | int | Sequence[int] | None = None,
        val_fraction: float = 0.2,
        seed: int = 0,
        C: float = 1.0,  # noqa: N803
        batch_size: int = 8,
        layer_path: str | None = None,
        attn_path: str | None = None,
        progress: bool = False,
        prompt_format: PromptFormat = PLAIN,
    ) -> ITIEditor:
        """Capture the head activations of ``demos`` in ``model`` (in ``prompt_format``,
        recorded in the metadata) and :meth:`fit` on them.

        ``layers``: any :func:`~spectral_edit.hf.layers.parse_layers` spec (default: all).
        """
        num_layers = len(find_decoder_layers(model, layer_path))
        chosen = parse_layers(layers, num_layers)
        num_heads, head_dim = attention_head_shape(model)
        modules = head_projections(model, chosen, num_heads, head_dim, layer_path, attn_path)
        positive, negative = head_activations(
            model,
            tokenizer,
            demos,
            modules,
            batch_size=batch_size,
            layer_path=layer_path,
            progress=progress,
            prompt_format=prompt_format,
        )
        return cls.fit(
            positive,
            negative,
            layers=chosen,
            num_heads=num_heads,
            head_dim=head_dim,
            hidden_size=hidden_size_of(model),
            num_layers=num_layers,
            top_k=top_k,
            alpha=alpha,
            val_fraction=val_fraction,
            seed=seed,
            C=C,
            layer_path=layer_path,
            attn_path=attn_path,
            metadata=prompt_format.record(),
        )

    def with_options(self, *, alpha: float | None = None, top_k: int | None = None) -> ITIEditor:
        """A copy with another strength and/or only the best ``top_k`` of the fitted heads."""
        changes: dict[str, Any] = {}
        if alpha is not None:
            changes["alpha"] = float(alpha)
        if top_k is not None:
            if not 1 <= top_k <= len(self.heads):
                raise ValueError(f"top_k must be in 1..{len(self.heads)} (fitted), got {top_k}")
            changes.update(
                heads=self.heads[:top_k],
                directions=self.directions[:top_k],
                sigmas=self.sigmas[:top_k],
            )
        return dataclasses.replace(self, **changes) if changes else self

    def shifts(self) -> dict[int, torch.Tensor]:
        """Layer → the ``(H·hd,)`` float32 vector added to its projection input: ``α σ_k θ_k``
        in each edited head's slice, zero elsewhere."""
        out: dict[int, torch.Tensor] = {}
        for (layer, head), direction, sigma in zip(
            self.heads, self.directions, self.sigmas, strict=True
        ):
            shift = out.setdefault(layer, torch.zeros(self.num_heads * self.head_dim))
            shift[head * self.head_dim : (head + 1) * self.head_dim] += (
                self.alpha * sigma * direction
            )
        return out

    def check_model(self, model: nn.Module) -> None:
        """Raise :class:`EditorFileError` unless width, layer count and heads fit ``model``."""
        super().check_model(model)
        shape = attention_head_shape(model)
        if shape != (self.num_heads, self.head_dim):
            raise EditorFileError(
                f"editor is for {self.num_heads} heads of size {self.head_dim}, the model has "
                f"{shape[0]} heads of size {shape[1]}"
            )

    def attach(self, model: nn.Module) -> HookHandle:
        """Edit ``model`` until ``handle.remove()``."""
        shifts = self.shifts()

        def edit(layer: int, hidden: torch.Tensor) -> torch.Tensor:
            return hidden + shifts[layer].to(device=hidden.device, dtype=hidden.dtype)

        def modules() -> dict[int, nn.Module]:
            return head_projections(
                model, list(shifts), self.num_heads, self.head_dim, self.layer_path, self.attn_path
            )

        return self._hook_modules(model, modules, edit, on="input")
