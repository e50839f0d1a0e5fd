"""Batched greedy generation that stops at the end of an answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedTokenizerBase

from ..core.options import check_count
from ..util.progress import progress_bar
from .positions import prompt_boundary
from .tokens import check_length, encode, model_inputs, pad_batch, pad_id_of

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
    progress: bool | str = False,
) -> list[str]:
    """Greedy continuations of ``prompts``, cut at the first stop string.

    Batches are left-padded with positions counted over real tokens; each sequence stops
    as soon as one of ``stops`` appears in its new text (or at EOS / ``max_new_tokens``).
    Returns the new text only (the prompt is not repeated), in the order of ``prompts``.
    Each prompt is the prompt boundary of a position-restricted edit
    (:func:`~spectral_edit.hf.positions.prompt_boundary`).
    """
    check_count("batch_size", batch_size)
    check_count("max_new_tokens", max_new_tokens)
    pad = pad_id_of(tokenizer)
    encoded = [encode(tokenizer, p) for p in prompts]
    check_length(model, max(map(len, encoded), default=0), max_new_tokens)
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    out: list[str] = [""] * len(prompts)
    bar = progress_bar(len(prompts), progress, "generate", "seq")
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        ids, mask, _ = pad_batch([encoded[i] for i in rows], pad, "left")
        kwargs = model_inputs(model, ids, mask, _)
        kwargs.pop("position_ids", None)  # generate() derives positions from the mask
        with prompt_boundary([len(encoded[i]) for i in rows]):
            generated = cast(GenerationMixin, model).generate(
                **kwargs,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                stop_strings=list(stops) if stops else None,
                tokenizer=tokenizer,
                pad_token_id=pad,
            )
        for row, sequence in zip(rows, generated[:, ids.shape[1] :], strict=True):
            text = tokenizer.decode(sequence, skip_special_tokens=True)
            assert isinstance(text, str)  # one sequence decodes to one string
            out[row] = truncate_at_stops(text, stops)
        bar.update(len(rows))
    bar.close()
    return out
