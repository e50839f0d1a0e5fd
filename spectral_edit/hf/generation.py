"""Batched greedy generation that stops at the end of an answer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..core.options import check_count
from ..util.progress import progress_bar
from .argmax import GreedyHead
from .heads import decoder_and_head
from .positions import prompt_boundary
from .prefix import (
    PrefixCache,
    forward_on_cache,
    merge_caches,
    shared_prefix_length,
    window_allows,
)
from .tokens import check_length, encode, input_device, output_cache, pad_batch, pad_id_of

ANSWER_STOPS = ("\n\n", "\nQ:")
"""Default stop strings: a blank line or the next question ends an answer."""


def truncate_at_stops(text: str, stops: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest stop string."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


@torch.no_grad()
def generate_greedy(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    stops: Sequence[str] = ANSWER_STOPS,
    batch_size: int = 8,
    decode_batch_size: int | None = None,
    progress: bool | str = False,
) -> list[str]:
    """Greedy continuations of ``prompts``, cut at the first stop string.

    ``batch_size``: prompts per prefill pass; ``decode_batch_size`` (default
    ``batch_size``): prompts decoded together, their prefill caches merged. Decoding is
    bound by reading the weights once per step, so a wide decode batch (many rows, few
    steps per row that finishes late) is faster where memory allows: the KV cache
    grows with it.

    The tokens all prompts share (a QA primer, few-shot examples) run once
    (:mod:`~spectral_edit.hf.prefix`); each batch continues from a copy of their cache,
    its prompts left-padded after them, with positions counted over real tokens (a
    sliding-window model whose window is shorter than the longest sequence shares
    nothing, so that padding never shifts its window). Each step applies the LM head to
    the last position only and takes the arg-max (screened in bfloat16 where that is
    exact and faster: :class:`~.argmax.GreedyHead`; no logits processors, as
    ``generate(do_sample=False)`` with a default generation config); a row stops at EOS
    (the generation config's or the tokenizer's), at a stop string in its new text, or
    at ``max_new_tokens``, and leaves the batch. Returns the new text only (the prompt is
    not repeated), cut before the first of ``stops``, in the order of ``prompts``. Each
    prompt is the prompt boundary of a position-restricted edit
    (:func:`~spectral_edit.hf.positions.prompt_boundary`).
    """
    check_count("batch_size", batch_size)
    check_count("max_new_tokens", max_new_tokens)
    group = batch_size if decode_batch_size is None else decode_batch_size
    check_count("decode_batch_size", group)
    pad = pad_id_of(tokenizer)
    encoded = [encode(tokenizer, p) for p in prompts]
    longest = max(map(len, encoded), default=0)
    check_length(model, longest, max_new_tokens)
    # padding inside a sequence is exact unless it moves a sliding window's edge
    inner_padding = window_allows(model, longest + max_new_tokens)
    shared = 0
    if inner_padding:
        shared = shared_prefix_length(encoded, [len(ids) - 1 for ids in encoded])
    with prompt_boundary([shared + 1]):  # every prompt is longer than the prefix
        prefix = PrefixCache.build(model, encoded[0][:shared] if shared else [])
    decoding = _Decoding(model, tokenizer, prefix, max_new_tokens, stops)
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    out: list[str] = [""] * len(prompts)
    bar = progress_bar(len(prompts), progress, "generate", "seq")
    for start in range(0, len(order), group if inner_padding else batch_size):
        rows = order[start : start + (group if inner_padding else batch_size)]
        texts = decoding.run([encoded[i] for i in rows], pad, batch_size)
        for row, text in zip(rows, texts, strict=True):
            out[row] = truncate_at_stops(text, stops)
        bar.update(len(rows))
    bar.close()
    return out


def end_token_ids(model: nn.Module, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """The ids that end a generation: the model's generation config's EOS id(s), else the
    tokenizer's."""
    config = getattr(model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return set()
    return {int(eos)} if isinstance(eos, int) else {int(e) for e in eos}


class _Decoding:
    """Greedy decoding of batches of prompts that all start with ``prefix``'s ids."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        prefix: PrefixCache,
        max_new_tokens: int,
        stops: Sequence[str],
    ) -> None:
        self.model, self.tokenizer, self.prefix = model, tokenizer, prefix
        self.base, _ = decoder_and_head(model)
        self.max_new_tokens, self.stops = max_new_tokens, list(stops)
        self.ends = end_token_ids(model, tokenizer)
        self.greedy = GreedyHead(model)

    def run(self, prompts: Sequence[list[int]], pad: int, chunk: int) -> list[str]:
        """The new text of each prompt (ids, the prefix's first), decoded without
        special tokens and not yet cut at the stops.

        The prompts' rests after the prefix are run in batches of ``chunk`` (left-padded,
        so little padding), then decoded together as one batch: their caches merged,
        each padded at its end (:func:`~.prefix.merge_caches`), so that one long answer
        does not hold up a batch per chunk."""
        shared = len(self.prefix)
        parts = []  # (cache, mask of its slots, last hidden state) per chunk
        for start in range(0, len(prompts), chunk):
            rows = prompts[start : start + chunk]
            ids, mask, _ = pad_batch([p[shared:] for p in rows], pad, "left")
            seen = torch.ones(len(rows), shared, dtype=torch.long)
            with prompt_boundary([len(p) for p in rows]):
                past = self.prefix.expanded(len(rows))
                out = forward_on_cache(self.base, ids, mask, past, shared, past_mask=seen)
            seen = torch.cat([seen, mask], dim=1)
            parts.append((output_cache(out), seen, out.last_hidden_state[:, -1]))
        merged = merge_caches([c for c, _, _ in parts], [m.shape[1] for _, m, _ in parts])
        if len(parts) > 1 and merged is not None:
            width = max(m.shape[1] for _, m, _ in parts)
            seen = torch.cat([F.pad(m, (0, width - m.shape[1])) for _, m, _ in parts])
            hidden = torch.cat([h for _, _, h in parts])
            parts = [(merged, seen, hidden)]
        texts: list[str] = []
        offset = 0
        for past, seen, hidden in parts:
            lengths = [len(p) for p in prompts[offset : offset + hidden.shape[0]]]
            texts.extend(self._decode(past, seen, hidden, lengths))
            offset += hidden.shape[0]
        return texts

    def _decode(
        self, past: object, seen: torch.Tensor, hidden: torch.Tensor, lengths: list[int]
    ) -> list[str]:
        """Greedy steps from the prompts' last final hidden states ``hidden`` ``(B, d)``
        on their cache ``past`` (slots marked by ``seen`` ``(B, S)``); rows of prompt
        ``lengths`` leave the batch as they end."""
        active = list(range(len(lengths)))
        new: list[list[int]] = [[] for _ in lengths]
        for step in range(self.max_new_tokens):
            tokens = self.greedy(hidden).tolist()
            keep = []
            for j, (row, token) in enumerate(zip(active, tokens, strict=True)):
                if token in self.ends:
                    continue
                new[row].append(token)
                if not self._stopped(new[row]):
                    keep.append(j)
            if not keep or step == self.max_new_tokens - 1:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep)
                past.batch_select_indices(index.to(input_device(self.base)))  # type: ignore[attr-defined]
                seen = seen[index]
            active = [active[j] for j in keep]
            ids = torch.tensor([[tokens[j]] for j in keep])
            with prompt_boundary([lengths[r] for r in active]):
                out = forward_on_cache(
                    self.base, ids, torch.ones_like(ids), past, seen.shape[1], past_mask=seen
                )
            past, seen = output_cache(out), torch.cat([seen, torch.ones_like(ids)], dim=1)
            hidden = out.last_hidden_state[:, -1]
        return [self._text(tokens) for tokens in new]

    def _text(self, tokens: list[int]) -> str:
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        assert isinstance(text, str)  # one sequence decodes to one string
        return text

    def _stopped(self, tokens: list[int]) -> bool:
        """Whether a stop string occurs in the text of ``tokens``."""
        if not self.stops:
            return False
        text = self._text(tokens)
        return any(stop in text for stop in self.stops)
