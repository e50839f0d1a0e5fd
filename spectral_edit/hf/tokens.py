"""Tokenisation of (context, continuation) pairs and padded batches.

One rule for the whole project, the one lm-evaluation-harness uses: encode
``context + continuation`` as a whole and the context alone; the continuation's tokens are
the whole encoding after the context's length. Trailing whitespace of the context moves
to the continuation first. An empty context becomes the BOS (else EOS) token.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of ``text`` with the tokenizer's special tokens (e.g. BOS) added."""
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def start_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids an empty context stands for: BOS if the tokenizer adds one, else BOS/EOS."""
    ids = encode(tokenizer, "")
    if ids:
        return ids
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token is None:
        raise ValueError("tokenizer has neither a BOS nor an EOS token to start an empty context")
    return [token]


def encode_pair(
    tokenizer: PreTrainedTokenizerBase, context: str, continuation: str
) -> tuple[list[int], list[int]]:
    """Split ``context + continuation`` into (context ids, continuation ids).

    As in lm-evaluation-harness, the context ids are the context's own encoding and the
    continuation ids are the whole string's encoding after that many tokens, so all
    continuations of one context share its ids (the start token stands for an empty one).
    """
    stripped = context.rstrip()
    continuation = context[len(stripped) :] + continuation
    context = stripped
    if not context:
        return start_ids(tokenizer), encode(tokenizer, continuation)[len(encode(tokenizer, "")) :]
    whole = encode(tokenizer, context + continuation)
    context_ids = encode(tokenizer, context)
    return context_ids, whole[len(context_ids) :]


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_id: int, side: str = "right"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad token sequences into a batch.

    Returns ``(input_ids, attention_mask, position_ids)``, each ``(B, T)`` long tensors;
    positions count real tokens only (0 at each sequence's first real token), so a
    sequence gets the same positions whichever side it is padded on.
    """
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', not {side!r}")
    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("pad_batch needs a non-empty list of non-empty sequences")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(0, len(seq)) if side == "right" else slice(width - len(seq), width)
        ids[row, span] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[row, span] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions


def pad_id_of(tokenizer: PreTrainedTokenizerBase) -> int:
    """The pad id, falling back to EOS (never used as a real token under the mask)."""
    for token in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if token is not None:
            return int(token)
    return 0


def accepts_position_ids(model: nn.Module) -> bool:
    """Whether ``model.forward`` takes ``position_ids`` (OPT-style models derive them)."""
    return "position_ids" in inspect.signature(model.forward).parameters


def model_inputs(
    model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Keyword arguments for a padded forward pass, on the model's input device."""
    device = input_device(model)
    kwargs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    if accepts_position_ids(model):
        kwargs["position_ids"] = positions.to(device)
    return kwargs


def input_device(model: nn.Module) -> torch.device:
    """The device of the input embeddings (the first shard under ``device_map``)."""
    get_embeddings = getattr(model, "get_input_embeddings", None)
    weight = getattr(get_embeddings() if callable(get_embeddings) else None, "weight", None)
    if isinstance(weight, torch.Tensor):
        return weight.device
    return next(model.parameters()).device


def cache_kwargs(model: nn.Module, cache: object) -> dict[str, object]:
    """The keyword that passes a KV cache to ``model.forward``: ``cache`` in recent
    transformers releases, ``past_key_values`` before."""
    params = inspect.signature(model.forward).parameters
    return {"cache" if "cache" in params else "past_key_values": cache}


def output_cache(output: object) -> object:
    """The KV cache returned by a forward pass (either attribute name)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)
