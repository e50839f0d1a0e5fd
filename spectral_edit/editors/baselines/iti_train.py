"""ITI's probe training: everything :class:`~.iti.ITIEditor` needs to choose and shift heads.

Shapes: ``N`` demonstrations, ``L`` probed layers, ``H`` heads of width ``hd``. The head
activations are the inputs of each layer's attention output projection at the last token,
``(N, L, H·hd)`` as captured (:func:`head_activations`) and ``(N, L, H, hd)`` float64 once
checked (:func:`head_arrays`). :func:`select_heads` runs the whole recipe:

1. a seeded split of the demonstrations (:func:`demo_split`; a demonstration's positive
   and negative fall in the same split);
2. one L2-regularised logistic-regression probe per (layer, head), all fitted jointly with
   L-BFGS (:func:`fit_logistic`), scored on the validation split (:func:`probe_scores`);
3. the ``top_k`` heads by validation accuracy, then lower log-loss, layer and head
   (:func:`rank_heads`);
4. their unit mass-mean directions ``θ`` and spreads ``σ`` (:func:`mass_mean_directions`).
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
from ...hf.capture import capture_modules
from ...hf.layers import attention_output_modules, linear_dims
from .common import activation_pair

Head = tuple[int, int]
"""``(layer, head)``: a decoder layer index and a head index within it."""


@dataclasses.dataclass(frozen=True)
class HeadSelection:
    """The outcome of :func:`select_heads`: ``K`` heads, best first, with their unit
    directions ``(K, hd)`` and spreads ``(K,)`` (float64), and what the fit recorded."""

    heads: tuple[Head, ...]
    directions: torch.Tensor
    sigmas: torch.Tensor
    info: dict[str, Any]


def select_heads(
    positive: torch.Tensor | np.ndarray,
    negative: torch.Tensor | np.ndarray,
    *,
    layers: Sequence[int],
    num_heads: int,
    head_dim: int,
    top_k: int = 16,
    val_fraction: float = 0.2,
    seed: int = 0,
    C: float = 1.0,  # noqa: N803 - scikit-learn's name for the inverse L2 strength
) -> HeadSelection:
    """Probe every head of ``(N, L, H·hd)`` paired activations at ``layers`` and keep the
    ``top_k`` best (all ``L·H`` if fewer); ``info`` records the split, ``C``, the probe
    accuracies of all heads (``probe_accuracy``, ``(L, H)``) and of the selected ones."""
    pos, neg = head_arrays(positive, negative, layers, num_heads, head_dim)
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
    heads = tuple((int(layers[lp]), h) for lp, h in ranked)
    return HeadSelection(heads, directions, sigmas, info)


def head_activations(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    demos: Sequence[Demonstration],
    modules: Mapping[int, nn.Module],
    *,
    batch_size: int = 8,
    layer_path: str | None = None,
    progress: bool = False,
    prompt_format: PromptFormat = PLAIN,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(N, L, H·hd)`` inputs of the attention output projections ``modules`` (layer
    → module, see :func:`head_projections`) at the last token of ``prompt + positive``
    and of ``prompt + negative``, for every demonstration, in ``prompt_format`` (prompts
    adopted into it, answers its continuations: as SEA's capture puts them)."""
    prompts = [prompt_format.adopt(demo.prompt) for demo in demos]

    def capture(kind: str, answers: list[str]) -> torch.Tensor:
        return capture_modules(
            model,
            tokenizer,
            prompts,
            [prompt_format.answer(answer) for answer in answers],
            modules=modules,
            on="input",
            batch_size=batch_size,
            layer_path=layer_path,
            progress=f"{kind} head activations" if progress else False,
        )

    positive = capture("positive", [demo.positive for demo in demos])
    return positive, capture("negative", [demo.negative for demo in demos])


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


def head_arrays(
    positive: torch.Tensor | np.ndarray,
    negative: torch.Tensor | np.ndarray,
    layers: Sequence[int],
    num_heads: int,
    head_dim: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paired ``(N, L, H·hd)`` arrays → float64 ``(N, L, H, hd)`` CPU tensors, shapes
    checked (see :func:`~.common.activation_pair`)."""
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
