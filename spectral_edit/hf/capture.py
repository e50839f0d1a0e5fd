"""Record activations at a site of chosen layers (or at any modules inside them, e.g. the
input of the attention output projection), for padded batches of texts.

The forward pass stops right after the deepest layer that is needed (the LM head and
later layers are never run), and each sequence's activation is read at its own last
token (or averaged over its continuation tokens), so padding side and batch company do
not change the result. The tokens that all sequences share before the first position
read (a QA primer, few-shot examples) run once: every batch continues from a copy of
their KV cache (:mod:`~spectral_edit.hf.prefix`), right-padded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Literal, get_args

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..core.options import Site, Token, check_count
from ..util.progress import progress_bar
from .heads import decoder_and_head
from .hooks import HookSite, hooked
from .layers import site_modules
from .prefix import PrefixCache, forward_on_cache, shared_prefix_length
from .tokens import check_length, encode_pair, pad_batch, pad_id_of

CaptureOn = Literal["input", "output"]
"""Where :func:`capture_modules` reads a module: its first input or its output."""


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
    site: Site | str = Site.RESIDUAL,
    token: Token | str = Token.LAST,
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
        site: a :class:`~spectral_edit.core.options.Site` or its string: ``"residual"``
            (decoder layer output) or ``"mlp"`` (MLP block output).
        token: a :class:`~spectral_edit.core.options.Token` or its string: ``"last"`` = the
            last token of each text; ``"mean"`` = the mean over the continuation's tokens
            (the last token when a continuation is empty).
        padding_side: how batches are padded; results do not depend on it.
        progress: show a progress bar (a string is used as its label).

    Returns:
        float32 tensor ``(N, L, d)`` on the CPU, in the order of ``contexts``.
    """
    token = Token.parse(token, "token")
    continuations = _checked_continuations(contexts, continuations)
    layers = list(layers)
    if not layers:
        raise ValueError("capture needs at least one layer")
    modules = site_modules(model, layers, site, layer_path)
    return _capture(
        model,
        tokenizer,
        contexts,
        continuations,
        modules=modules,
        keys=layers,
        on="output",
        token=token,
        batch_size=batch_size,
        padding_side=padding_side,
        layer_path=layer_path,
        progress=progress,
    )


@torch.no_grad()
def capture_modules(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    contexts: Sequence[str],
    continuations: Sequence[str] | None = None,
    *,
    modules: Mapping[int, nn.Module],
    on: CaptureOn = "input",
    token: Token | str = Token.LAST,
    batch_size: int = 8,
    padding_side: str = "right",
    layer_path: str | None = None,
    progress: bool | str = False,
) -> torch.Tensor:
    """Like :func:`capture`, but read at any modules inside the decoder layers.

    Args:
        modules: layer index → a module run inside that decoder layer (e.g. the attention
            output projection from :func:`~spectral_edit.hf.layers.attention_output_modules`);
            the forward pass stops after the deepest of these layers.
        on: ``"input"`` = the module's first positional input (a forward pre-hook);
            ``"output"`` = its output's hidden-state tensor.

    Returns:
        float32 tensor ``(N, M, w)`` on the CPU (``M = len(modules)``, in the mapping's
        order; ``w`` the width read there), rows in the order of ``contexts``.
    """
    token = Token.parse(token, "token")
    continuations = _checked_continuations(contexts, continuations)
    if on not in get_args(CaptureOn):
        raise ValueError(f"on must be one of {get_args(CaptureOn)}, not {on!r}")
    if not modules:
        raise ValueError("capture_modules needs at least one module")
    return _capture(
        model,
        tokenizer,
        contexts,
        continuations,
        modules=modules,
        keys=list(modules),
        on=on,
        token=token,
        batch_size=batch_size,
        padding_side=padding_side,
        layer_path=layer_path,
        progress=progress,
    )


def _capture(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    contexts: Sequence[str],
    continuations: Sequence[str],
    *,
    modules: Mapping[int, nn.Module],
    keys: Sequence[int],
    on: HookSite,
    token: Token,
    batch_size: int,
    padding_side: str,
    layer_path: str | None,
    progress: bool | str,
) -> torch.Tensor:
    """Record ``modules`` (keyed by decoder layer index) at ``on``; stack them in the
    order of ``keys`` → ``(N, len(keys), w)``."""
    stop_layer = max(keys)
    deepest_site = site_modules(model, [stop_layer], "residual", layer_path)[stop_layer]

    encoded = [encode_pair(tokenizer, c, a) for c, a in zip(contexts, continuations, strict=True)]
    sequences = [ctx + cont for ctx, cont in encoded]
    check_count("batch_size", batch_size)
    check_length(model, max(map(len, sequences), default=0))  # before any forward pass
    mean = token == Token.MEAN
    spans = [
        (len(ctx), len(ctx) + len(cont)) if mean and cont else (len(ctx + cont) - 1,) * 2
        for ctx, cont in encoded
    ]
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', not {padding_side!r}")
    # the tokens every sequence shares before its first read position run once
    shared = shared_prefix_length(sequences, [start for start, _ in spans])
    prefix = PrefixCache.build(model, sequences[0][:shared]) if shared else PrefixCache([])
    if shared:  # after a cache, right padding keeps real tokens in consecutive slots
        padding_side = "right"
        spans = [(start - shared, end - shared) for start, end in spans]
    base, _ = decoder_and_head(model)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    result: torch.Tensor | None = None
    pad = pad_id_of(tokenizer)
    bar = progress_bar(len(order), progress, "capture", "seq")
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        rests = [sequences[i][shared:] for i in rows]
        ids, mask, _ = pad_batch(rests, pad, padding_side)
        offsets = [ids.shape[1] - len(rest) if padding_side == "left" else 0 for rest in rests]
        recorded: dict[int, torch.Tensor] = {}

        def record(key: int, hidden: torch.Tensor) -> None:
            recorded[key] = _read_spans(hidden, [spans[i] for i in rows], offsets)  # noqa: B023

        def stop(key: int, hidden: torch.Tensor) -> None:
            raise _StopForward

        with (
            hooked(modules, record, on=on),
            hooked({stop_layer: deepest_site}, stop),
            contextlib.suppress(_StopForward),
        ):
            past = prefix.expanded(len(rows))
            forward_on_cache(base, ids, mask, past, len(prefix), use_cache=past is not None)
        batch = torch.stack([recorded[key] for key in keys], dim=1)
        if result is None:
            result = torch.empty((len(sequences), len(keys), batch.shape[-1]))
        result[rows] = batch
        bar.update(len(rows))
    bar.close()
    assert result is not None
    return result


def _checked_continuations(
    contexts: Sequence[str], continuations: Sequence[str] | None
) -> Sequence[str]:
    """Validate the pairing; ``None`` continuations become empty strings."""
    if continuations is None:
        continuations = [""] * len(contexts)
    if len(continuations) != len(contexts):
        raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuations")
    return continuations


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
