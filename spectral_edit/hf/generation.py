"""Batched greedy generation that stops at the end of an answer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

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
    with_room,
)
from .tokens import check_length, encode, input_device, output_cache, pad_batch, pad_id_of

ANSWER_STOPS = ("\n\n", "\nQ:")
"""Default stop strings: a blank line or the next question ends an answer."""


def compact_order(keep: Sequence[int]) -> list[int]:
    """The batch rows ``keep`` (ascending) in the order that moves fewest rows: a kept row
    whose place is inside the new batch stays there, and each hole (a dropped row inside
    it) takes a kept row from beyond it, last first. ``[0, 2, 3, 5]`` (rows 1 and 4 of six
    dropped) gives ``[0, 5, 2, 3]``: one row moves instead of three."""
    keep = list(keep)
    size = len(keep)
    staying = {row for row in keep if row < size}
    beyond = [row for row in keep if row >= size]
    return [at if at in staying else beyond.pop() for at in range(size)]


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
    plan = plan_greedy(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        stops=stops,
        batch_size=batch_size,
        decode_batch_size=decode_batch_size,
    )
    return plan.generate(progress)


@dataclass(frozen=True)
class GreedyPlan:
    """How :func:`generate_greedy` runs its prompts: their ids ``encoded`` (special
    tokens added), the decoding on their shared prefix's cache, the ``groups`` of prompt
    indices decoded together (shortest prompts first), each prefilled ``chunk`` prompts
    per pass with ``pad`` as padding."""

    decoding: GreedyDecoding
    encoded: list[list[int]]
    groups: list[list[int]]
    pad: int
    chunk: int

    def generate(self, progress: bool | str = False) -> list[str]:
        """The greedy texts of the prompts, cut at the stops, in the prompts' order."""
        out: list[str] = [""] * len(self.encoded)
        bar = progress_bar(len(self.encoded), progress, "generate", "seq")
        for rows in self.groups:
            texts = self.decoding.run([self.encoded[i] for i in rows], self.pad, self.chunk)
            for row, text in zip(rows, texts, strict=True):
                out[row] = truncate_at_stops(text, self.decoding.stops)
            bar.update(len(rows))
        bar.close()
        return out


def plan_greedy(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    stops: Sequence[str],
    batch_size: int,
    decode_batch_size: int | None,
) -> GreedyPlan:
    """The plan of :func:`generate_greedy` (its arguments): checks them, encodes the
    prompts and runs their shared prefix once (the only forward pass here)."""
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
    decoding = GreedyDecoding(model, tokenizer, prefix, max_new_tokens, stops)
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    width = group if inner_padding else batch_size
    groups = [order[start : start + width] for start in range(0, len(order), width)]
    return GreedyPlan(decoding, encoded, groups, pad, batch_size)


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


RowsObserver = Callable[[list[int]], None]
"""Called after each forward pass of a decoding with the rows (indices into the prompts
of :meth:`GreedyDecoding.prefill`) whose last position it just computed, in batch order:
hooks on the model's modules saw them as ``hidden[:, -1]``."""


@dataclass
class Prefilled:
    """Prompts after their prefill: their cache ``past``, its slot mask ``seen``
    ``(B, S)`` (0 = padding), their last final hidden states ``hidden`` ``(B, d)``, and
    the prompts' indices ``rows`` (into the prefilled list) and lengths ``lengths``."""

    past: object
    seen: torch.Tensor
    hidden: torch.Tensor
    rows: list[int]
    lengths: list[int]


class GreedyDecoding:
    """Greedy decoding of batches of prompts that all start with ``prefix``'s ids: a
    prefill (:meth:`prefill`), then greedy steps (:meth:`decode`)."""

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
        special tokens and not yet cut at the stops."""
        return [
            self.text(tokens)
            for part in self.prefill(prompts, pad, chunk)
            for tokens in self.decode(part)
        ]

    def prefill(
        self,
        prompts: Sequence[list[int]],
        pad: int,
        chunk: int,
        observe: RowsObserver | None = None,
    ) -> list[Prefilled]:
        """Run the prompts' rests after the prefix in batches of ``chunk`` (left-padded,
        so little padding) and merge their caches into one batch, each padded at its end
        (:func:`~.prefix.merge_caches`), so that one long answer does not hold up a batch
        per chunk; one part per chunk where the caches do not merge."""
        shared = len(self.prefix)
        parts = []
        for start in range(0, len(prompts), chunk):
            rows = list(range(start, min(start + chunk, len(prompts))))
            ids, mask, _ = pad_batch([prompts[r][shared:] for r in rows], pad, "left")
            seen = torch.ones(len(rows), shared, dtype=torch.long)
            lengths = [len(prompts[r]) for r in rows]
            with prompt_boundary(lengths):
                past = self.prefix.expanded(len(rows))
                out = forward_on_cache(self.base, ids, mask, past, shared, past_mask=seen)
            if observe is not None:
                observe(rows)
            seen = torch.cat([seen, mask], dim=1)
            hidden = out.last_hidden_state[:, -1]
            parts.append(Prefilled(output_cache(out), seen, hidden, rows, lengths))
        merged = merge_caches([p.past for p in parts], [p.seen.shape[1] for p in parts])
        if len(parts) < 2 or merged is None:
            return parts
        width = max(p.seen.shape[1] for p in parts)
        return [
            Prefilled(
                merged,
                torch.cat([F.pad(p.seen, (0, width - p.seen.shape[1])) for p in parts]),
                torch.cat([p.hidden for p in parts]),
                [r for p in parts for r in p.rows],
                [n for p in parts for n in p.lengths],
            )
        ]

    def decode(
        self, part: Prefilled, observe: RowsObserver | None = None, *, feed_last: bool = False
    ) -> list[list[int]]:
        """Greedy steps from ``part`` (its cache is used up): each row's new token ids,
        without the EOS that ended it; a row leaves the batch as it ends. A row's tokens
        are all fed back (``observe`` sees them) except its last where a stop string or
        ``max_new_tokens`` ended it; with ``feed_last``, the last tokens of rows that
        ``max_new_tokens`` ended are fed too (one more forward pass, no LM head), so that
        ``observe`` sees every token of every row that no stop string ended."""
        past, seen, hidden = with_room(part.past, self.max_new_tokens), part.seen, part.hidden
        active = list(range(len(part.rows)))
        new: list[list[int]] = [[] for _ in part.rows]
        for step in range(self.max_new_tokens):
            tokens = self.greedy(hidden).tolist()
            keep = []
            for j, (row, token) in enumerate(zip(active, tokens, strict=True)):
                if token in self.ends:
                    continue
                new[row].append(token)
                if not self._stopped(new[row]):
                    keep.append(j)
            last = step == self.max_new_tokens - 1
            if not keep or (last and not feed_last):
                break
            if len(keep) < len(active):
                keep = compact_order(keep)
                index = torch.tensor(keep)
                past.batch_select_indices(index.to(input_device(self.base)))  # type: ignore[attr-defined]
                seen = seen[index]
            active = [active[j] for j in keep]
            ids = torch.tensor([[tokens[j]] for j in keep])
            with prompt_boundary([part.lengths[r] for r in active]):
                out = forward_on_cache(
                    self.base, ids, torch.ones_like(ids), past, seen.shape[1], past_mask=seen
                )
            if observe is not None:
                observe([part.rows[r] for r in active])
            if last:
                break
            past, seen = output_cache(out), torch.cat([seen, torch.ones_like(ids)], dim=1)
            hidden = out.last_hidden_state[:, -1]
        return new

    def text(self, tokens: list[int]) -> str:
        """The text of new ``tokens``, special tokens skipped."""
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        assert isinstance(text, str)  # one sequence decodes to one string
        return text

    def _stopped(self, tokens: list[int]) -> bool:
        """Whether a stop string occurs in the text of ``tokens``."""
        if not self.stops:
            return False
        text = self.text(tokens)
        return any(stop in text for stop in self.stops)
