"""Record activations at a site of chosen layers, for padded batches of texts.

The forward pass stops right after the deepest layer that is needed (the LM head and
later layers are never run), and each sequence's activation is read at its own last
token (or averaged over its continuation tokens), so padding side and batch company do
not change the result.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from .hooks import hooked
from .layers import site_modules
from .progress import progress_bar
from .tokens import encode_pair, model_inputs, pad_batch, pad_id_of

TOKEN_CHOICES = ("last", "mean")


class _StopForward(Exception):
    """Raised by the capture hook of the deepest needed layer to end the forward pass."""


@torch.no_grad()
def capture(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    contexts: Sequence[str],
    continuations: Sequence[str] | None = None,
    *,
    layers: Sequence[int],
    site: str = "residual",
    token: str = "last",
    batch_size: int = 8,
    padding_side: str = "right",
    layer_path: str | None = None,
    progress: bool | str = False,
) -> torch.Tensor:
    """Activations of ``context + continuation`` texts.

    Args:
        contexts: N prompt strings.
        continuations: N answer strings appended to the prompts (``None`` = empty).
        layers: L decoder layer indices.
        site: ``"residual"`` (decoder layer output) or ``"mlp"`` (MLP block output).
        token: ``"last"`` = the last token of each text; ``"mean"`` = the mean over the
            continuation's tokens (the last token when a continuation is empty).
        padding_side: how batches are padded; results do not depend on it.
        progress: show a progress bar (a string is used as its label).

    Returns:
        float32 tensor ``(N, L, d)`` on the CPU, in the order of ``contexts``.
    """
    if token not in TOKEN_CHOICES:
        raise ValueError(f"token must be one of {TOKEN_CHOICES}, not {token!r}")
    if continuations is None:
        continuations = [""] * len(contexts)
    if len(continuations) != len(contexts):
        raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuations")
    layers = list(layers)
    if not layers:
        raise ValueError("capture needs at least one layer")
    modules = site_modules(model, layers, site, layer_path)
    stop_layer = max(layers)
    deepest_site = site_modules(model, [stop_layer], "residual", layer_path)[stop_layer]

    encoded = [encode_pair(tokenizer, c, a) for c, a in zip(contexts, continuations, strict=True)]
    sequences = [ctx + cont for ctx, cont in encoded]
    spans = [
        (len(ctx), len(ctx) + len(cont)) if token == "mean" and cont else (len(ctx + cont) - 1,) * 2
        for ctx, cont in encoded
    ]
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    result: torch.Tensor | None = None
    pad = pad_id_of(tokenizer)
    bar = progress_bar(len(order), progress, "capture", "seq")
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        ids, mask, positions = pad_batch([sequences[i] for i in rows], pad, padding_side)
        offsets = [ids.shape[1] - len(sequences[i]) if padding_side == "left" else 0 for i in rows]
        recorded: dict[int, torch.Tensor] = {}

        def record(key: int, hidden: torch.Tensor) -> None:
            recorded[key] = _read_spans(hidden, [spans[i] for i in rows], offsets)  # noqa: B023

        def stop(key: int, hidden: torch.Tensor) -> None:
            raise _StopForward

        with (
            hooked(modules, record),
            hooked({stop_layer: deepest_site}, stop),
            contextlib.suppress(_StopForward),
        ):
            model(**model_inputs(model, ids, mask, positions), use_cache=False)
        batch = torch.stack([recorded[layer] for layer in layers], dim=1)
        if result is None:
            result = torch.empty((len(sequences), len(layers), batch.shape[-1]))
        result[rows] = batch
        bar.update(len(rows))
    bar.close()
    assert result is not None
    return result


def _read_spans(
    hidden: torch.Tensor, spans: Sequence[tuple[int, int]], offsets: Sequence[int]
) -> torch.Tensor:
    """Per row, the mean of ``hidden[row, start:end]`` (or the single token ``start``
    when ``start == end``); ``(B, T, d)`` → float32 ``(B, d)`` on the CPU."""
    out = []
    for row, ((start, end), offset) in enumerate(zip(spans, offsets, strict=True)):
        if start == end:
            out.append(hidden[row, start + offset])
        else:
            out.append(hidden[row, start + offset : end + offset].mean(0))
    return torch.stack(out).float().cpu()
