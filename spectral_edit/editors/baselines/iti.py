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
output projection); ``α = 0`` is the unedited model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ...demos.format import Demonstration
from ...demos.prompts import answer_text
from ...hf.capture import capture_modules
from ...hf.hooks import HookHandle
from ...hf.layers import (
    attention_head_shape,
    attention_output_modules,
    find_decoder_layers,
    hidden_size_of,
    linear_dims,
    parse_layers,
)
from ..base import EditorBase
from ..file_format import EditorFileError, write_editor_file
from .common import EDITOR_KEYS, activation_pair, editor_fields, editor_header, load_validated

FORMAT_NAME = "spectral-edit/iti"
FORMAT_VERSION = 1

_TENSORS = ("directions", "sigmas")
"""The tensors of every ITI editor file."""

Head = tuple[int, int]
"""``(layer, head)``: a decoder layer index and a head index within it."""


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
    site: ClassVar[str] = "attention-heads"

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", tuple((int(lay), int(h)) for lay, h in self.heads))
        if not self.heads:
            raise ValueError("an ITI editor needs at least one head")
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
        pos, neg = _head_arrays(positive, negative, layers, num_heads, head_dim)
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        train, val = demo_split(pos.shape[0], val_fraction, seed)
        accuracy, loss = probe_scores(pos, neg, train, val, C=C)
        ranked = rank_heads(accuracy, loss)[:top_k]
        directions, sigmas = mass_mean_directions(pos, neg, ranked)
        info = {
            "n_demonstrations": int(pos.shape[0]),
            "n_train": len(train),
            "n_val": len(val),
            "val_fraction": float(val_fraction),
            "seed": int(seed),
            "C": float(C),
            "probe_layers": [int(i) for i in layers],
            "probe_accuracy": accuracy.tolist(),
            "selected_accuracy": [float(accuracy[lp, h]) for lp, h in ranked],
        }
        return cls(
            heads=tuple((int(layers[lp]), h) for lp, h in ranked),
            directions=directions.float(),
            sigmas=sigmas.float(),
            num_heads=int(num_heads),
            head_dim=int(head_dim),
            hidden_size=int(hidden_size),
            num_layers=int(num_layers),
            alpha=float(alpha),
            layer_path=layer_path,
            attn_path=attn_path,
            metadata={**info, **dict(metadata or {})},
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
    ) -> ITIEditor:
        """Capture the head activations of ``demos`` in ``model`` and :meth:`fit` on them.

        ``layers``: any :func:`~spectral_edit.hf.layers.parse_layers` spec (default: all).
        """
        num_layers = len(find_decoder_layers(model, layer_path))
        chosen = parse_layers(layers, num_layers)
        num_heads, head_dim = attention_head_shape(model)
        modules = head_projections(model, chosen, num_heads, head_dim, layer_path, attn_path)
        prompts = [demo.prompt for demo in demos]
        captured = {
            kind: capture_modules(
                model,
                tokenizer,
                prompts,
                [answer_text(getattr(demo, kind)) for demo in demos],
                modules=modules,
                on="input",
                batch_size=batch_size,
                layer_path=layer_path,
                progress=f"{kind} head activations" if progress else False,
            )
            for kind in ("positive", "negative")
        }
        return cls.fit(
            captured["positive"],
            captured["negative"],
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

    def save(self, path: str | Path) -> Path:
        """Write the editor to one ``.safetensors`` file, atomically."""
        header = editor_header(
            self,
            FORMAT_NAME,
            FORMAT_VERSION,
            heads=[list(head) for head in self.heads],
            num_heads=self.num_heads,
            head_dim=self.head_dim,
            attn_path=self.attn_path,
        )
        tensors = {"directions": self.directions, "sigmas": self.sigmas}
        return write_editor_file(path, tensors, header)

    @classmethod
    def load(cls, path: str | Path, model: nn.Module | None = None) -> ITIEditor:
        """Read and validate an ITI editor file (and its fit to ``model``)."""

        def build(header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> ITIEditor:
            return cls(
                heads=tuple(tuple(head) for head in header["heads"]),
                directions=tensors["directions"],
                sigmas=tensors["sigmas"],
                num_heads=int(header["num_heads"]),
                head_dim=int(header["head_dim"]),
                attn_path=header.get("attn_path"),
                **editor_fields(header),
            )

        required = ("heads", "num_heads", "head_dim", *EDITOR_KEYS)
        return load_validated(
            path, FORMAT_NAME, FORMAT_VERSION, required, lambda _: _TENSORS, build, model
        )


def head_projections(
    model: nn.Module,
    layers: Sequence[int],
    num_heads: int,
    head_dim: int,
    layer_path: str | None = None,
    attn_path: str | None = None,
) -> dict[int, nn.Module]:
    """Layer → attention output projection, checked to take ``num_heads·head_dim`` inputs."""
    modules = attention_output_modules(model, layers, layer_path, attn_path)
    width = num_heads * head_dim
    for layer, module in modules.items():
        dims = linear_dims(module)
        found = None if dims is None else dims[0]
        if found != width:
            raise ValueError(
                f"layer {layer}: the attention output projection ({type(module).__name__}) "
                f"takes {found} inputs, not num_heads * head_dim = {num_heads} * {head_dim} = "
                f"{width}; check the config's head_dim or pass attn_path"
            )
    return modules


def demo_split(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Sorted (train, validation) demonstration indices: a seeded random split with
    ``round(n · val_fraction)`` (at least 1, at most ``n − 1``) validation demonstrations."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if n < 2:
        raise ValueError(f"ITI needs at least 2 demonstrations to split, got {n}")
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[n_val:]), sorted(order[:n_val])


def fit_logistic(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    C: float = 1.0,  # noqa: N803
    max_iter: int = 500,
) -> tuple[torch.Tensor, torch.Tensor]:
    """P independent L2-regularised logistic regressions, fitted jointly with L-BFGS.

    Args:
        x: ``(P, n, f)`` features (standardise them first); computed in float64.
        y: ``(n,)`` labels in {0, 1}, shared by the P problems.
        C: inverse regularisation strength; each problem minimises
            ``mean_i BCE(x_i · w + b, y_i) + |w|² / (2 C n)`` (scikit-learn's objective
            divided by n; the bias is not penalised). The sum of the P strictly convex
            objectives has the P individual minimisers as its one minimiser.

    Returns:
        ``(w, b)``: float64 ``(P, f)`` and ``(P,)``.
    """
    x = x.double()
    y = y.double().expand(x.shape[0], -1)
    params = torch.zeros(x.shape[0], x.shape[2] + 1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [params],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    penalty = 1.0 / (2.0 * C * x.shape[1])

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = _logistic_objective(x, y, params, penalty)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    params = params.detach()
    return params[:, :-1], params[:, -1]


def _logistic_objective(
    x: torch.Tensor, y: torch.Tensor, params: torch.Tensor, penalty: float
) -> torch.Tensor:
    """Sum over the P problems of mean log-loss + ``penalty · |w|²``; ``params`` = [w, b]."""
    logits = torch.einsum("pnf,pf->pn", x, params[:, :-1]) + params[:, -1:]
    data = nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(1)
    return (data + penalty * params[:, :-1].pow(2).sum(1)).sum()


def probe_scores(
    positive: torch.Tensor,
    negative: torch.Tensor,
    train: Sequence[int],
    val: Sequence[int],
    *,
    C: float = 1.0,  # noqa: N803
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validation accuracy and mean log-loss ``(L, H)`` of one probe per head.

    ``positive``/``negative``: ``(N, L, H, hd)``. Each probe is trained on the ``train``
    demonstrations' positives (label 1) and negatives (label 0), with features standardised
    by the training statistics, and scored on the ``val`` demonstrations' both answers.
    """
    _, layers, heads, _ = positive.shape
    accuracy = torch.empty(layers, heads, dtype=torch.float64)
    loss = torch.empty(layers, heads, dtype=torch.float64)
    y_train = _labels(len(train))
    y_val = _labels(len(val)).expand(heads, -1)
    for lp in range(layers):
        x_train = _per_head(positive, negative, train, lp)
        x_val = _per_head(positive, negative, val, lp)
        mean = x_train.mean(1, keepdim=True)
        std = x_train.std(1, correction=0, keepdim=True)
        std = torch.where(std > 0, std, torch.ones_like(std))
        weight, bias = fit_logistic((x_train - mean) / std, y_train, C=C)
        logits = torch.einsum("hnf,hf->hn", (x_val - mean) / std, weight) + bias[:, None]
        accuracy[lp] = ((logits > 0).double() == y_val).double().mean(1)
        loss[lp] = nn.functional.binary_cross_entropy_with_logits(
            logits, y_val, reduction="none"
        ).mean(1)
    return accuracy, loss


def _labels(n: int) -> torch.Tensor:
    """``n`` ones then ``n`` zeros (positives first), float64."""
    return torch.cat([torch.ones(n), torch.zeros(n)]).double()


def _per_head(
    positive: torch.Tensor, negative: torch.Tensor, rows: Sequence[int], lp: int
) -> torch.Tensor:
    """``(H, 2n, hd)`` float64: the rows' positives then negatives at layer position lp."""
    both = torch.cat([positive[rows, lp], negative[rows, lp]])  # (2n, H, hd)
    return both.double().transpose(0, 1)


def rank_heads(accuracy: torch.Tensor, loss: torch.Tensor) -> list[tuple[int, int]]:
    """All ``(layer position, head)`` of ``(L, H)`` scores, best first: higher accuracy,
    then lower loss, then lower layer position, then lower head index."""
    layers, heads = accuracy.shape
    keys = [
        (-float(accuracy[lp, h]), float(loss[lp, h]), lp, h)
        for lp in range(layers)
        for h in range(heads)
    ]
    return [(lp, h) for *_, lp, h in sorted(keys)]


def mass_mean_directions(
    positive: torch.Tensor, negative: torch.Tensor, heads: Sequence[tuple[int, int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit mass-mean directions ``(K, hd)`` and spreads ``(K,)`` (float64) of ``heads``.

    For head ``(lp, h)``: ``θ = normalise(mean_i h+_i − mean_i h-_i)`` over all N
    demonstrations and ``σ`` = population std of all 2N activations projected on ``θ``
    (a zero mean difference gives ``θ = 0``, ``σ = 0``: no edit).
    """
    directions, sigmas = [], []
    for lp, h in heads:
        pos, neg = positive[:, lp, h].double(), negative[:, lp, h].double()
        direction = nn.functional.normalize(pos.mean(0) - neg.mean(0), dim=0)
        directions.append(direction)
        sigmas.append((torch.cat([pos, neg]) @ direction).std(correction=0))
    return torch.stack(directions), torch.stack(sigmas)


def _head_arrays(
    positive: torch.Tensor | np.ndarray,
    negative: torch.Tensor | np.ndarray,
    layers: Sequence[int],
    num_heads: int,
    head_dim: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paired ``(N, L, H·hd)`` arrays → float64 ``(N, L, H, hd)`` CPU tensors, shapes
    checked (see :func:`~._common.activation_pair`)."""
    pos, neg = activation_pair(positive, negative, layers, paired=True)
    if pos.shape[2] != num_heads * head_dim:
        raise ValueError(
            f"expected (N, {len(layers)}, {num_heads}*{head_dim}) arrays, got "
            f"{tuple(pos.shape)} and {tuple(neg.shape)}"
        )
    return (
        pos.reshape(*pos.shape[:2], num_heads, head_dim),
        neg.reshape(*neg.shape[:2], num_heads, head_dim),
    )
