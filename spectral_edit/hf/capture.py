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
import hashlib
from collections.abc import Mapping, Sequence
from typing import Literal, get_args

import torch
from torch import nn
from transformers import DynamicCache, PreTrainedTokenizerBase

from ..core.options import Site, Token, check_count
from ..util.progress import progress_bar
from .heads import decoder_and_head
from .hooks import HookFn, HookSite, hooked
from .layers import site_modules, text_config
from .prefix import (
    PrefixCache,
    forward_on_cache,
    select_cache_rows,
    shared_prefix_length,
    window_allows,
)
from .tokens import (
    check_length,
    context_length,
    encode_pair,
    input_device,
    pad_batch,
    pad_id_of,
)

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
    token_seed: int = 0,
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
            last token of each text; ``"mean"`` = the mean over the continuation's tokens;
            ``"random"`` = one of the continuation's tokens, drawn from ``token_seed`` and
            the text's ids (:func:`random_answer_position`); both the last token when a
            continuation is empty.
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
        token_seed=token_seed,
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
    token_seed: int = 0,
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
        token_seed=token_seed,
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
    token_seed: int,
    batch_size: int,
    padding_side: str,
    layer_path: str | None,
    progress: bool | str,
) -> torch.Tensor:
    """Record ``modules`` (keyed by decoder layer index) at ``on``; stack them in the
    order of ``keys`` → ``(N, len(keys), w)``."""
    reader = LayerReader(model, modules, keys, on, layer_path)
    encoded = [encode_pair(tokenizer, c, a) for c, a in zip(contexts, continuations, strict=True)]
    sequences = [ctx + cont for ctx, cont in encoded]
    check_count("batch_size", batch_size)
    check_length(model, max(map(len, sequences), default=0))  # before any forward pass
    spans = answer_spans(encoded, token, token_seed)
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', not {padding_side!r}")
    # the tokens every sequence shares before its first read position run once
    shared = shared_prefix_length(sequences, [start for start, _ in spans])
    prefix = PrefixCache.build(model, sequences[0][:shared]) if shared else PrefixCache([])
    if shared:  # after a cache, right padding keeps real tokens in consecutive slots
        padding_side = "right"
        spans = [(start - shared, end - shared) for start, end in spans]
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    result: torch.Tensor | None = None
    pad = pad_id_of(tokenizer)
    bar = progress_bar(len(order), progress, "capture", "seq")
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        rests = [sequences[i][shared:] for i in rows]
        ids, mask, _ = pad_batch(rests, pad, padding_side)
        offsets = [ids.shape[1] - len(rest) if padding_side == "left" else 0 for rest in rests]
        batch = reader.read(
            ids, mask, prefix.expanded(len(rows)), len(prefix), [spans[i] for i in rows], offsets
        )
        if result is None:
            result = torch.empty((len(sequences), len(keys), batch.shape[-1]))
        result[rows] = batch
        bar.update(len(rows))
    bar.close()
    assert result is not None
    return result


@torch.no_grad()
def capture_kinds(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    contexts: Sequence[str],
    continuations: Mapping[str, Sequence[str]],
    *,
    layers: Sequence[int],
    site: Site | str = Site.RESIDUAL,
    token: Token | str = Token.LAST,
    token_seed: int = 0,
    batch_size: int = 8,
    layer_path: str | None = None,
    progress: bool | str = False,
) -> dict[str, torch.Tensor]:
    """:func:`capture` of several kinds of continuation of the same contexts (e.g. the
    neutral, positive and negative answers of demonstrations), each context run once.

    ``continuations`` maps a kind to N continuations (one per context). The tokens that
    all sequences share run once from a KV cache (as in :func:`capture`); then, per
    batch of ``batch_size`` contexts, the tokens each context's K sequences share before
    their first read position run once, and the batch's K·B continuations go on from
    copies of their rows of that cache, shortest first in chunks of ``batch_size``
    (inner padding, positions over real tokens). Where that would change a
    result (a sliding window shorter than a sequence's slots) or save nothing (a single
    kind, or a context none of whose tokens its kinds share past the common prefix),
    each kind is captured on its own. Either way every activation equals
    :func:`capture`'s.

    Returns:
        kind → float32 ``(N, L, d)`` on the CPU, rows in the order of ``contexts``.
    """
    token = Token.parse(token, "token")
    kinds = list(continuations)
    checked = {kind: _checked_continuations(contexts, continuations[kind]) for kind in kinds}
    layers = list(layers)
    if not layers:
        raise ValueError("capture needs at least one layer")
    modules = site_modules(model, layers, site, layer_path)
    check_count("batch_size", batch_size)
    encoded = {
        kind: [encode_pair(tokenizer, c, a) for c, a in zip(contexts, checked[kind], strict=True)]
        for kind in kinds
    }
    sequences = {kind: [ctx + cont for ctx, cont in encoded[kind]] for kind in kinds}
    spans = {kind: answer_spans(encoded[kind], token, token_seed) for kind in kinds}
    flat = [seq for kind in kinds for seq in sequences[kind]]
    check_length(model, max(map(len, flat), default=0))  # before any forward pass
    shared = shared_prefix_length(flat, [start for kind in kinds for start, _ in spans[kind]])
    groups = [  # per context: the tokens its kinds share before their first read
        _common_length(
            [sequences[kind][i] for kind in kinds], min(spans[kind][i][0] for kind in kinds)
        )
        for i in range(len(contexts))
    ]
    # cache slots of the widest batch, padding included (bounded over all batches)
    slots = max(groups, default=0) + max(
        (len(sequences[k][i]) - g for k in kinds for i, g in enumerate(groups)), default=0
    )
    limit = context_length(model)
    fits = window_allows(model, slots) and (limit is None or slots <= limit)
    if len(kinds) < 2 or any(g <= shared for g in groups) or not fits:
        return {
            kind: _capture(
                model,
                tokenizer,
                contexts,
                checked[kind],
                modules=modules,
                keys=layers,
                on="output",
                token=token,
                token_seed=token_seed,
                batch_size=batch_size,
                padding_side="right",
                layer_path=layer_path,
                progress=f"{kind} activations" if progress is True else progress,
            )
            for kind in kinds
        }
    reader = LayerReader(model, modules, layers, "output", layer_path)
    prefix = PrefixCache.build(model, flat[0][:shared]) if shared else PrefixCache([])
    pad = pad_id_of(tokenizer)
    result: dict[str, torch.Tensor] = {}
    order = sorted(range(len(contexts)), key=lambda i: max(len(sequences[k][i]) for k in kinds))
    bar = progress_bar(
        len(order), "activations" if progress is True else progress, "capture", "seq"
    )
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        first = sequences[kinds[0]]
        ids, mask, _ = pad_batch([first[i][shared : groups[i]] for i in rows], pad, "right")
        past = prefix.expanded(len(rows))
        if past is None:
            past = DynamicCache(config=text_config(model.config))
        reader.run_until_deepest(ids, mask, past, len(prefix))  # fills ``past`` in place
        seen = torch.cat([torch.ones(len(rows), len(prefix), dtype=mask.dtype), mask], dim=1)
        # the batch's K·B continuations, shortest first, in chunks of ``batch_size`` rows
        # that each go on from a copy of their contexts' cache rows: little padding
        pairs = sorted(
            ((kind, j, i) for j, i in enumerate(rows) for kind in kinds),
            key=lambda pair: len(sequences[pair[0]][pair[2]]) - groups[pair[2]],
        )
        for at in range(0, len(pairs), batch_size):
            chunk = pairs[at : at + batch_size]
            index = torch.tensor([j for _, j, _ in chunk])
            rests = [sequences[kind][i][groups[i] :] for kind, _, i in chunk]
            ids, mask, _ = pad_batch(rests, pad, "right")
            read = [
                (spans[kind][i][0] - groups[i], spans[kind][i][1] - groups[i])
                for kind, _, i in chunk
            ]
            batch = reader.read(
                ids,
                mask,
                select_cache_rows(past, index.to(input_device(reader.base))),
                seen.shape[1],
                read,
                [0] * len(chunk),
                past_mask=seen[index],
            )
            for (kind, _, i), activation in zip(chunk, batch, strict=True):
                if kind not in result:
                    result[kind] = torch.empty((len(contexts), len(layers), batch.shape[-1]))
                result[kind][i] = activation
        bar.update(len(rows))
    bar.close()
    return {kind: result[kind] for kind in kinds}


class LayerReader:
    """Forward passes of the base model that record ``modules`` (keyed by layer) at
    ``on`` and stop right after the deepest layer in ``keys``."""

    def __init__(
        self,
        model: nn.Module,
        modules: Mapping[int, nn.Module],
        keys: Sequence[int],
        on: HookSite,
        layer_path: str | None,
    ) -> None:
        self.modules, self.keys, self.on = modules, list(keys), on
        self.stop_layer = max(self.keys)
        self.deepest = site_modules(model, [self.stop_layer], "residual", layer_path)
        self.base, _ = decoder_and_head(model)

    def run_until_deepest(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        past: object,
        past_len: int,
        *,
        past_mask: torch.Tensor | None = None,
        record: HookFn | None = None,
    ) -> None:
        """The base model on ``ids`` after ``past`` (updated in place up to the deepest
        layer; later layers' entries are stale, and no later pass reads them)."""

        def stop(key: int, hidden: torch.Tensor) -> None:
            raise _StopForward

        with contextlib.ExitStack() as stack:
            if record is not None:
                stack.enter_context(hooked(self.modules, record, on=self.on))
            stack.enter_context(hooked(self.deepest, stop))
            stack.enter_context(contextlib.suppress(_StopForward))
            forward_on_cache(
                self.base,
                ids,
                mask,
                past,
                past_len,
                past_mask=past_mask,
                use_cache=past is not None,
            )

    def read(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        past: object,
        past_len: int,
        spans: Sequence[tuple[int, int]],
        offsets: Sequence[int],
        *,
        past_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The activations of a batch, read per row at ``spans`` (shifted by
        ``offsets``) → float32 ``(B, len(keys), w)`` on the CPU."""
        recorded: dict[int, torch.Tensor] = {}

        def record(key: int, hidden: torch.Tensor) -> None:
            recorded[key] = _read_spans(hidden, spans, offsets)

        self.run_until_deepest(ids, mask, past, past_len, past_mask=past_mask, record=record)
        return torch.stack([recorded[key] for key in self.keys], dim=1)


def answer_spans(
    encoded: Sequence[tuple[list[int], list[int]]], token: Token, seed: int
) -> list[tuple[int, int]]:
    """Per (context ids, continuation ids): the positions read, ``(start, end)``: the
    continuation's tokens for ``mean``, one drawn token twice for ``random`` (non-empty
    continuations), else the last token twice."""
    spans = []
    for ctx, cont in encoded:
        if cont and token == Token.MEAN:
            spans.append((len(ctx), len(ctx) + len(cont)))
        elif cont and token == Token.RANDOM:
            at = len(ctx) + random_answer_position(ctx, cont, seed)
            spans.append((at, at))
        else:
            spans.append((len(ctx + cont) - 1,) * 2)
    return spans


def random_answer_position(context: Sequence[int], continuation: Sequence[int], seed: int) -> int:
    """The index in ``continuation`` (non-empty) that ``token="random"`` reads: uniform
    over its tokens, a function of ``seed`` and the ids alone (a BLAKE2 hash), so the
    same text gives the same token in any batch, order, process or capture route."""
    if not continuation:
        raise ValueError("a random answer token needs a non-empty continuation")
    data = ",".join(map(str, [seed, len(context), *context, *continuation])).encode()
    digest = hashlib.blake2b(data, digest_size=8).digest()
    return int.from_bytes(digest, "little") % len(continuation)


def _common_length(sequences: Sequence[Sequence[int]], limit: int) -> int:
    """How many leading ids all ``sequences`` share, at most ``limit``."""
    length = min([limit, *map(len, sequences)])
    for n in range(length):
        if any(s[n] != sequences[0][n] for s in sequences[1:]):
            return n
    return length


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
