"""How far an editor moves the next-token distribution on neutral text: per-token
``KL(edited ‖ unedited)``, in nats.

The unedited side is computed once per set of texts (:func:`build_kl_reference`) and reused
for every editor and setting: it stores the unedited model's *final-normed hidden states*
``(T, d)`` per text (what the base model of :func:`~spectral_edit.hf.heads.decoder_and_head`
returns), not the log-probabilities (``T × vocab`` floats: ~1 MB per token on a 262k
vocabulary). :func:`measure_kl` runs the base model under the editor (its hooks live inside
the decoder layers), turns both sides' hidden states into logits with
:func:`~spectral_edit.hf.heads.lm_head_logits` (soft-capping included) a chunk of
:data:`KL_CHUNK` tokens at a time, and computes the KL in float64. The LM head runs on each
token once per side; the full model forward (which would apply the head too) is never used.

Exactness: a token whose edited hidden state equals the reference bit for bit gets KL exactly
``0.0`` (identical distributions), so ``α = 0`` and identity editors measure exactly 0; this
needs the same batches as the reference (:func:`measure_kl` uses the reference's batch size
by default: other batch sizes give the same KL up to float rounding). Other tokens' tiny
negative rounding is clamped to 0.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..hf.devices import execution_device
from ..hf.heads import decoder_and_head, lm_head_logits
from ..hf.tokens import encode, model_inputs, pad_batch
from ..util.progress import progress_bar

if TYPE_CHECKING:
    from .contrast import ContrastReadout

__all__ = [
    "KL_CHUNK",
    "KLReference",
    "KLResult",
    "build_kl_reference",
    "measure_kl",
    "measure_readout_kl",
    "token_kl",
]

KL_CHUNK = 32
"""Tokens whose logits are formed at once (two ``(KL_CHUNK, vocab)`` float64 tensors)."""

_PAD = 0
"""Pad id of the padded batches; padded positions are masked out and never read."""


@dataclass(frozen=True)
class KLReference:
    """The unedited model's view of the neutral texts, computed once.

    Invariants: ``len(texts) == len(token_ids) == len(hidden)``; ``token_ids[i]`` is
    ``(T_i,)`` int64 (``1 <= T_i <= max_tokens``, the tokenizer's BOS included) and
    ``hidden[i]`` is ``(T_i, d)`` float32 on the CPU: the final-normed hidden states, one
    next-token distribution per position (the last included). ``batch_size`` is the batch
    size they were computed with (:func:`measure_kl`'s default).
    """

    texts: tuple[str, ...]
    token_ids: tuple[torch.Tensor, ...]
    hidden: tuple[torch.Tensor, ...]
    max_tokens: int = 128
    batch_size: int = 8
    seconds: float = 0.0

    @property
    def n_tokens(self) -> int:
        """Positions over all texts (each one next-token distribution)."""
        return sum(int(ids.shape[0]) for ids in self.token_ids)


@dataclass(frozen=True)
class KLResult:
    """Per-token ``KL(edited ‖ unedited)`` in nats: ``per_text[i]`` is ``(T_i,)`` float64
    on the CPU, every value ``>= 0`` (NaN only if the edited model produced NaNs)."""

    per_text: tuple[torch.Tensor, ...]
    seconds: float

    @property
    def values(self) -> np.ndarray:
        """Every token's KL, texts in order, ``(sum T_i,)`` float64."""
        if not self.per_text:
            return np.zeros(0)
        return torch.cat(self.per_text).numpy()

    @property
    def summary(self) -> dict[str, Any]:
        """``{"kl_mean", "kl_p95", "kl_max", "tokens", "texts", "seconds"}``: the mean, the
        95th percentile (``numpy.percentile``, linear interpolation) and the maximum over
        all tokens of all texts (nats per token; NaN when there are no tokens)."""
        values = self.values
        empty = values.size == 0
        return {
            "kl_mean": float("nan") if empty else float(values.mean()),
            "kl_p95": float("nan") if empty else float(np.percentile(values, 95)),
            "kl_max": float("nan") if empty else float(values.max()),
            "tokens": int(values.size),
            "texts": len(self.per_text),
            "seconds": self.seconds,
        }


def _batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Text indices in batches of ``batch_size``, longest first (stable): dense batches,
    and the same batches for the same lengths and batch size."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def _final_hidden(
    base: nn.Module, rows: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Final-normed hidden states ``(B, T, d)`` of the right-padded ``rows`` and the mask."""
    ids, mask, positions = pad_batch([r.tolist() for r in rows], _PAD, "right")
    out = base(**model_inputs(base, ids, mask, positions), use_cache=False)
    return out.last_hidden_state, mask


@torch.no_grad()
def build_kl_reference(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    max_tokens: int = 128,
    batch_size: int = 8,
    progress: bool | str = False,
) -> KLReference:
    """The unedited model's final hidden states on ``texts``, each truncated to its first
    ``max_tokens`` tokens (:func:`~spectral_edit.hf.tokens.encode`, BOS included).

    Run this with no editor attached: what the model computes now is "unedited".

    Raises:
        ValueError: no texts, ``max_tokens < 1``, or a text that encodes to no tokens.
    """
    if not texts:
        raise ValueError("build_kl_reference: no texts")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    started = time.perf_counter()
    token_ids = tuple(
        torch.tensor(encode(tokenizer, t)[:max_tokens], dtype=torch.long) for t in texts
    )
    if any(ids.numel() == 0 for ids in token_ids):
        raise ValueError("build_kl_reference: a text encodes to no tokens")
    base, _ = decoder_and_head(model)
    hidden: list[torch.Tensor | None] = [None] * len(texts)
    bar = progress_bar(len(texts), progress, "KL reference", "text")
    for rows in _batches([len(ids) for ids in token_ids], batch_size):
        states, _ = _final_hidden(base, [token_ids[i] for i in rows])
        for row, i in enumerate(rows):
            hidden[i] = states[row, : len(token_ids[i])].float().cpu()
        bar.update(len(rows))
    bar.close()
    return KLReference(
        texts=tuple(texts),
        token_ids=token_ids,
        hidden=tuple(h for h in hidden if h is not None),
        max_tokens=max_tokens,
        batch_size=batch_size,
        seconds=time.perf_counter() - started,
    )


def _applied(editor: Any, model: nn.Module) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext() if editor is None else editor.apply(model)


def token_kl(model: nn.Module, edited: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``KL(edited ‖ reference)`` per token ``(N,)`` float64 from final hidden states
    ``(N, d)`` of both sides (any device/dtype), :data:`KL_CHUNK` tokens at a time.

    Tokens whose two hidden states are equal (every element ``==``) get exactly ``0.0``;
    the others are clamped at 0 (float rounding may make them slightly negative).
    """
    if edited.shape != reference.shape or edited.ndim != 2:
        raise ValueError(
            f"expected two (N, d) tensors of one shape, got {tuple(edited.shape)} and "
            f"{tuple(reference.shape)}"
        )
    _, head = decoder_and_head(model)
    weight = next(head.parameters())  # its dtype; on meta where accelerate offloads it
    device = execution_device(head)
    edited = edited.to(device)
    reference = reference.to(device)
    kl = torch.zeros(edited.shape[0], dtype=torch.float64)
    same = (edited.float() == reference.float()).all(dim=-1).cpu()
    differ = torch.nonzero(~same).flatten()
    for chunk in differ.split(KL_CHUNK):
        index = chunk.to(device)
        log_p = _log_probs(model, edited.index_select(0, index), weight.dtype)
        log_q = _log_probs(model, reference.index_select(0, index), weight.dtype)
        p = log_p.exp()
        terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
        kl[chunk] = terms.sum(-1).clamp_min(0.0).cpu()
    return kl


def _log_probs(model: nn.Module, hidden: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """float64 next-token log-probabilities ``(n, vocab)`` of final hidden states."""
    return torch.log_softmax(lm_head_logits(model, hidden.to(dtype)).double(), dim=-1)


@torch.no_grad()
def measure_kl(
    model: nn.Module,
    reference: KLReference,
    editor: Any = None,
    *,
    batch_size: int | None = None,
    progress: bool | str = False,
) -> KLResult:
    """Per-token ``KL(edited ‖ unedited)`` on the reference's texts.

    ``editor``: anything with an ``.apply(model)`` context manager (every editor of this
    library), applied around the edited pass only; ``None`` measures the model as it is
    (0 when nothing is attached). The unedited side is ``reference``: the unedited model
    never runs here. ``batch_size``: ``None`` = the reference's (the same batches, so that
    unchanged hidden states are bit-identical and give exactly 0).
    """
    started = time.perf_counter()
    base, _ = decoder_and_head(model)
    size = reference.batch_size if batch_size is None else batch_size
    per_text: list[torch.Tensor | None] = [None] * len(reference.texts)
    bar = progress_bar(len(reference.texts), progress, "KL", "text")
    with _applied(editor, model):
        for rows in _batches([len(ids) for ids in reference.token_ids], size):
            states, mask = _final_hidden(base, [reference.token_ids[i] for i in rows])
            edited = states[mask.to(states.device).bool()]  # (sum T, d), rows in order
            ref = torch.cat([reference.hidden[i] for i in rows])
            values = token_kl(model, edited, ref)
            parts = values.split([len(reference.token_ids[i]) for i in rows])
            for i, part in zip(rows, parts, strict=True):
                per_text[i] = part
            bar.update(len(rows))
    bar.close()
    return KLResult(
        per_text=tuple(t for t in per_text if t is not None),
        seconds=time.perf_counter() - started,
    )


@torch.no_grad()
def measure_readout_kl(
    model: nn.Module,
    reference: KLReference,
    readout: ContrastReadout,
    *,
    batch_size: int | None = None,
    progress: bool | str = False,
) -> KLResult:
    """Per-token ``KL(readout ‖ unedited)`` on the reference's texts, for a readout that
    contrasts the model with a companion (:mod:`~spectral_edit.evaluate.contrast`): its
    next-token distribution (:meth:`~.contrast.ContrastReadout.log_distribution`) from the
    reference's (unedited) final states and the companion's, which run here on the same
    batches. At β = 0 every token measures exactly ``0.0``."""
    started = time.perf_counter()
    companion = readout.companion
    other_base, _ = decoder_and_head(companion.model)
    _, head = decoder_and_head(model)
    weight = next(head.parameters())  # its dtype; on meta where accelerate offloads it
    device = execution_device(head)
    size = reference.batch_size if batch_size is None else batch_size
    per_text: list[torch.Tensor | None] = [None] * len(reference.texts)
    bar = progress_bar(len(reference.texts), progress, "KL", "text")
    for rows in _batches([len(ids) for ids in reference.token_ids], size):
        with companion.active():
            states, mask = _final_hidden(other_base, [reference.token_ids[i] for i in rows])
        other = states[mask.to(states.device).bool()]
        own = torch.cat([reference.hidden[i] for i in rows]).to(device, weight.dtype)
        kl = torch.zeros(own.shape[0], dtype=torch.float64)
        for chunk in torch.arange(own.shape[0]).split(KL_CHUNK):
            index = chunk.to(device)
            log_p = readout.log_distribution(
                model, own.index_select(0, index), other.index_select(0, index.to(other.device))
            )
            log_q = _log_probs(model, own.index_select(0, index), weight.dtype)
            p = log_p.exp()
            terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
            kl[chunk] = terms.sum(-1).clamp_min(0.0).cpu()
        for i, part in zip(
            rows, kl.split([len(reference.token_ids[i]) for i in rows]), strict=True
        ):
            per_text[i] = part
        bar.update(len(rows))
    bar.close()
    return KLResult(
        per_text=tuple(t for t in per_text if t is not None),
        seconds=time.perf_counter() - started,
    )
