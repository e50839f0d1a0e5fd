"""Contrastive readouts: the scored model (the expert) against a second model run on the same
tokens — CD's amateur (Li et al., ACL 2023, "Contrastive Decoding") or ICD's factually weak
copy (Zhang et al. 2023, "Alleviating Hallucinations of Large Language Models through
Induced Hallucinations", arXiv:2312.15710).

The second model is a :class:`Companion`: a causal LM whose base model and LM head give its
log-probabilities, with an optional editor whose hooks act during its pass only (ICD: the
scored model itself with the LoRA adapters trained on the negative answers, so one module
serves both passes). The scorer (:mod:`~spectral_edit.evaluate.scorer`) runs the companion
on every token it runs the expert on, with its own KV cache, and hands the readout both
final-normed states of each position that predicts a continuation token; the LM heads
run only at those positions.

The contrast, for a position with expert log-probabilities ``lp_m`` and companion
log-probabilities ``lp_a`` (each a log-softmax over the vocabulary) and a token ``v``::

    s(v) = lp_m(v) + β·(lp_m(v) − lp_a(v))     = (1+β)·lp_m(v) − β·lp_a(v)   if v ∈ V_head
    s(v) = lp_m(v)                                                            otherwise

with the adaptive plausibility constraint ``V_head = {v : p_m(v) ≥ λ·max_w p_m(w)}``
(Li et al. 2023, Eq. 2; ICD uses the same). Choices, stated once:

- *No renormalisation*: ``s`` is summed over the continuation's tokens as it is, not
  renormalised by a log-softmax over the vocabulary — as the ICD authors score TruthfulQA
  multiple choice (``src/benchmark_evaluation/truthfulqa_eval.py`` of
  github.com/HillZhang1999/ICD calls ``lm_score(..., post_softmax=False)``).
- *A token outside ``V_head`` counts its expert log-probability*, not ``−inf`` (which makes
  every answer with one implausible token impossible and MC2 undefined) nor DoLa's
  ``−1000``: the contrast acts only where CD would choose among tokens, and the score stays
  the model's own elsewhere. So ``β = 0`` is the plain model's score exactly, for every
  ``λ``; ``λ = 0`` disables the constraint (the ICD authors' MC setting, ``--relative_top
  0.0``, whose ``lp_m − lp_a`` ranks answers as ``s`` does for large ``β``).
- *Greedy*: a continuation token is "greedy" when it is the arg-max of ``s`` over
  ``V_head`` (what contrastive decoding would pick).
- *Distribution* (for the KL harm of ``sea tune``): ``softmax(s)`` over the vocabulary
  (:meth:`ContrastReadout.log_distribution`); ``β = 0`` gives the model's own exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..hf.heads import decoder_and_head, lm_head_logits
from ..hf.layers import hidden_size_of

ROW_CHUNK = 64
"""Positions whose ``(rows, vocab)`` logits are formed at once (bounded memory at 262k)."""


@dataclass(frozen=True)
class Companion:
    """A second causal LM run on the scored tokens: ``model`` (its base model and LM head),
    with ``editor``'s hooks (anything with ``apply(model)``) attached during its pass only.
    ``name``: what it is, for messages and reports."""

    model: nn.Module
    editor: Any | None = None
    name: str = "amateur"

    @contextlib.contextmanager
    def active(self) -> Iterator[nn.Module]:
        """The companion's model with its editor's hooks inside the block."""
        if self.editor is None:
            yield self.model
        else:
            with self.editor.apply(self.model):
                yield self.model

    @property
    def width(self) -> int:
        """The companion's hidden size (its final states' width)."""
        return hidden_size_of(self.model)


def companion_of(readout: object) -> Companion | None:
    """The readout's companion model, or ``None`` for a readout of the scored model alone."""
    companion = getattr(readout, "companion", None)
    return companion if isinstance(companion, Companion) else None


def join_features(own: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """The scorer's features ``(B, T, 1 + K, d)`` and the companion's final states
    ``(B, T, d_a)`` → ``(B, T, 2 + K, max(d, d_a))``: the companion's state last, the
    narrower of the two zero-padded at the end of its width (readouts slice it back)."""
    other = other.to(own.device, own.dtype).unsqueeze(2)
    width = max(own.shape[-1], other.shape[-1])
    own = nn.functional.pad(own, (0, width - own.shape[-1]))
    other = nn.functional.pad(other, (0, width - other.shape[-1]))
    return torch.cat([own, other], dim=2)


@dataclass(frozen=True)
class ContrastReadout:
    """The contrast of the module docstring: strength ``beta`` (β ≥ 0; 0 = the model),
    plausibility ``plausibility`` (λ in ``[0, 1)``; 0 = no constraint), against
    ``companion``. ``name``: ``"icd"`` or ``"cd"`` (messages, reports)."""

    companion: Companion
    beta: float = 1.0
    plausibility: float = 0.1
    name: str = "contrast"
    hidden_states: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"the contrast strength β must be finite and >= 0, got {self.beta}")
        if not 0 <= self.plausibility < 1:
            raise ValueError(f"the plausibility λ must be in [0, 1), got {self.plausibility}")
        if self.hidden_states:
            raise ValueError("a contrast readout reads the final states only")

    def with_options(self, *, alpha: float | None = None) -> ContrastReadout:
        """A copy at strength β = ``alpha`` (``sea tune`` calibrates β as α)."""
        return self if alpha is None else dataclasses.replace(self, beta=float(alpha))

    def _split(self, model: nn.Module, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if features.ndim != 3 or features.shape[1] != 2:
            raise ValueError(
                f"a contrast readout expects (N, 2, d) features, got {tuple(features.shape)}"
            )
        own = features[:, 0, : hidden_size_of(model)].contiguous()
        other = features[:, 1, : self.companion.width].contiguous()
        return own, other

    def _parts(
        self, model: nn.Module, own: torch.Tensor, other: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(expert logits ``(n, V)`` float32, expert log-normaliser ``(n,)`` float64,
        companion log-probabilities ``(n, V)`` float32, plausible ``(n, V)`` bool)."""
        logits = lm_head_logits(model, own)
        other_logits = lm_head_logits(self.companion.model, other).to(logits.device)
        if other_logits.shape[-1] != logits.shape[-1]:
            raise ValueError(
                f"the {self.companion.name}'s vocabulary ({other_logits.shape[-1]} logits) "
                f"differs from the model's ({logits.shape[-1]})"
            )
        lse = torch.logsumexp(logits.double(), dim=-1)
        other_lp = torch.log_softmax(other_logits, dim=-1)
        if self.plausibility > 0:
            floor = logits.max(dim=-1, keepdim=True).values + math.log(self.plausibility)
            plausible = logits >= floor
        else:
            plausible = torch.ones_like(logits, dtype=torch.bool)
        return logits, lse, other_lp, plausible

    def target_log_probs(
        self, model: nn.Module, features: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, 2, w)`` features (expert, companion), ``(N,)`` targets → (contrast scores
        ``s(target)`` ``(N,)`` float64, greedy ``(N,)`` bool), on the CPU."""
        own, other = self._split(model, features)
        scores, greedy = [], []
        for start in range(0, own.shape[0], ROW_CHUNK):
            rows = slice(start, start + ROW_CHUNK)
            logits, lse, other_lp, plausible = self._parts(model, own[rows], other[rows])
            target = targets[rows].to(logits.device)[:, None]
            # the expert's log-probability exactly as the plain readout computes it
            lp_m = logits.gather(1, target)[:, 0].double() - lse
            lp_a = other_lp.gather(1, target)[:, 0].double()
            inside = plausible.gather(1, target)[:, 0]
            contrast = lp_m + self.beta * (lp_m - lp_a)
            scores.append(torch.where(inside, contrast, lp_m).cpu())
            # s shifted by the row's log-normaliser (same arg-max), exactly the logits at β = 0
            shifted = logits + self.beta * ((logits - lse[:, None].float()) - other_lp)
            best = shifted.masked_fill(~plausible, -math.inf).argmax(-1)
            greedy.append((best == target[:, 0]).cpu())
        return torch.cat(scores), torch.cat(greedy)

    def log_distribution(
        self, model: nn.Module, own: torch.Tensor, other: torch.Tensor
    ) -> torch.Tensor:
        """``log softmax(s)`` ``(n, V)`` float64 from the expert's and the companion's final
        states ``(n, d)`` / ``(n, d_a)``: the readout's next-token distribution. At β = 0
        it is computed exactly as the model's own (``log_softmax`` of its float64 logits)."""
        logits, lse, other_lp, plausible = self._parts(model, own, other)
        logits64 = logits.double()
        shift = self.beta * ((logits64 - lse[:, None]) - other_lp.double())
        return torch.log_softmax(logits64 + shift.masked_fill(~plausible, 0.0), dim=-1)


def check_same_tokenizer(
    tokenizer: PreTrainedTokenizerBase,
    amateur: PreTrainedTokenizerBase,
    model: nn.Module,
    amateur_model: nn.Module,
    amateur_name: str = "the amateur",
) -> None:
    """Raise ``ValueError`` unless ``amateur`` tokenises as ``tokenizer`` does (the same
    vocabulary, token by id, and the same BOS/EOS) and its LM head has the model's width:
    CD compares the two models' log-probabilities of the same token ids."""
    if tokenizer.get_vocab() != amateur.get_vocab():
        raise ValueError(
            f"--amateur {amateur_name}: its tokenizer differs from the model's "
            f"({len(amateur.get_vocab())} tokens against {len(tokenizer.get_vocab())}, or the "
            "same count with other ids); contrastive decoding needs the same tokenizer"
        )
    for special in ("bos_token_id", "eos_token_id"):
        if getattr(tokenizer, special) != getattr(amateur, special):
            raise ValueError(f"--amateur {amateur_name}: its {special} differs from the model's")
    width = [next(decoder_and_head(m)[1].parameters()).shape[0] for m in (model, amateur_model)]
    if width[0] != width[1]:
        raise ValueError(
            f"--amateur {amateur_name}: its LM head has {width[1]} outputs, the model's "
            f"{width[0]}; contrastive decoding needs the same vocabulary"
        )
