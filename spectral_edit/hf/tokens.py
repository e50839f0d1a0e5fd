"""Tokenisation of (context, continuation) pairs and padded batches.

One rule for the whole project, the one lm-evaluation-harness uses: encode
``context + continuation`` as a whole and the context alone; the continuation's tokens are
the whole encoding after the context's length. Where the context ends in whitespace that
the tokenizer would merge into the continuation's first token, that whitespace moves to
the continuation first (``"A: " + "Paris"``); where the context's own tokens already begin
the whole's (a chat template's generation prompt ending in a newline), the context stays
as written, so the continuation's tokens are exactly the answer's. An empty context
becomes the BOS (else EOS) token. A text that starts with the BOS token's text (a chat
template's rendering) gets no second BOS.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from .devices import execution_device

CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
"""Config fields that hold a model's context length, in the order they are trusted."""


class SequenceTooLong(ValueError):
    """A sequence longer than the model's context: refused before the forward pass (a
    1.3 MB prompt once asked for 772 GB). The message names the length, the limit and
    what to do."""


def context_length(model: nn.Module) -> int | None:
    """The longest sequence ``model`` takes: its config's context field
    (:data:`CONTEXT_FIELDS`, in a multimodal config's ``text_config`` too), or ``None``
    where the config names none (then nothing is checked)."""
    config = getattr(model, "config", None)
    for source in (config, getattr(config, "text_config", None)):
        for field in CONTEXT_FIELDS:
            value = getattr(source, field, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def check_length(model: nn.Module, length: int, new_tokens: int = 0) -> None:
    """Raise :class:`SequenceTooLong` when ``length`` tokens (plus ``new_tokens`` still to
    generate) exceed :func:`context_length` of ``model``; a model without a known context
    passes."""
    limit = context_length(model)
    if limit is None or length + new_tokens <= limit:
        return
    asked = f"{length} tokens" + (f" + {new_tokens} new tokens" if new_tokens else "")
    raise SequenceTooLong(
        f"a sequence of {asked} is longer than the model's context of {limit} tokens "
        f"(config max_position_embeddings); shorten the text (prompt, demonstration or "
        f"benchmark item)" + (" or generate fewer new tokens" if new_tokens else "")
    )


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of ``text`` with the tokenizer's special tokens (e.g. BOS) added, unless
    ``text`` already starts with the BOS token's text (as a chat template renders it):
    then none are added, so the ids hold exactly one BOS (lm-evaluation-harness's rule)."""
    bos = getattr(tokenizer, "bos_token", None)
    add = not (isinstance(bos, str) and bos and text.startswith(bos))
    return list(tokenizer(text, add_special_tokens=add)["input_ids"])


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
    A context ending in whitespace is kept as written when its encoding begins the
    whole's (the split is then exact at the context's end); otherwise its trailing
    whitespace moves to the continuation (lm-evaluation-harness's rule).
    """
    if context.strip() and context != context.rstrip():
        whole, context_ids = encode(tokenizer, context + continuation), encode(tokenizer, context)
        if whole[: len(context_ids)] == context_ids:
            return context_ids, whole[len(context_ids) :]
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
    """Keyword arguments for a padded forward pass, on the model's input device; a batch
    wider than the model's context is :class:`SequenceTooLong` (:func:`check_length`)."""
    check_length(model, ids.shape[-1])
    device = input_device(model)
    kwargs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    if accepts_position_ids(model):
        kwargs["position_ids"] = positions.to(device)
    return kwargs


def input_device(model: nn.Module) -> torch.device:
    """The device the input embeddings run on (the first shard under ``device_map``;
    their execution device where accelerate offloads them: :func:`~.devices.
    execution_device`)."""
    get_embeddings = getattr(model, "get_input_embeddings", None)
    embeddings = get_embeddings() if callable(get_embeddings) else None
    return execution_device(embeddings if isinstance(embeddings, nn.Module) else model)


def cache_kwargs(model: nn.Module, cache: object) -> dict[str, object]:
    """The keyword that passes a KV cache to ``model.forward``: ``cache`` in recent
    transformers releases, ``past_key_values`` before."""
    params = inspect.signature(model.forward).parameters
    return {"cache" if "cache" in params else "past_key_values": cache}


def output_cache(output: object) -> object:
    """The KV cache returned by a forward pass (either attribute name)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)
