"""How the scorer turns hidden states into next-token scores: the plain LM head, or DoLa.

A readout names the extra hidden states it needs (indices into ``output_hidden_states``:
0 = embeddings, ``j`` = output of decoder layer ``j - 1``) and maps, for N predicting
positions, the features ``(N, 1 + K, d)`` — the final-normed state first, then the K
requested states — and the N target tokens to each target's log-score (float64) and
whether it is the readout's arg-max. A readout may also have a ``companion``, a second
model the scorer runs on the same tokens (:mod:`~spectral_edit.evaluate.contrast`: CD and
ICD); its final state then comes after the others in the features.

:class:`DoLaReadout` is DoLa (Chuang et al., ICLR 2024), decoding by contrasting layers,
as its authors score multiple choice: at each position the premature layer is the
candidate whose next-token distribution is furthest (Jensen-Shannon) from the final
layer's; the score is ``log p_final - log p_premature``, renormalised, with tokens that the
final layer finds implausible (``p < relative_top * max p``) set to ``-1000``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from ..hf.heads import final_norm, lm_head_logits


class Readout(Protocol):
    """What the scorer needs from a readout."""

    @property
    def hidden_states(self) -> tuple[int, ...]:
        """The decoder layers whose states the readout reads besides the final one."""
        ...

    @property
    def name(self) -> str:
        """A short name for messages (``"final"``, ``"dola"``)."""
        ...

    def target_log_probs(
        self, model: nn.Module, features: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class FinalLayerReadout:
    """The model's own next-token logits (the LM head on the final-normed state)."""

    hidden_states: tuple[int, ...] = ()
    name: str = "final"

    def target_log_probs(
        self, model: nn.Module, features: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, 1, d)`` final states, ``(N,)`` targets → (log-probabilities ``(N,)``
        float64, greedy ``(N,)`` bool), on the CPU."""
        logits = lm_head_logits(model, features[:, 0])
        return _pick(logits, targets, torch.logsumexp(logits.double(), dim=-1))


FINAL = FinalLayerReadout()


@dataclass(frozen=True)
class DoLaReadout:
    """DoLa: contrast the final layer with the most different premature layer.

    ``hidden_states``: candidate premature layers as ``output_hidden_states`` indices
    (each strictly below the last layer); ``relative_top``: the plausibility threshold
    (0 disables the mask); ``post_softmax``: renormalise the contrast (the authors' default
    for multiple choice).
    """

    hidden_states: tuple[int, ...]
    relative_top: float = 0.1
    post_softmax: bool = True
    name: str = "dola"

    def __post_init__(self) -> None:
        if not self.hidden_states:
            raise ValueError("DoLa needs at least one candidate premature layer")
        if any(j < 0 for j in self.hidden_states):
            raise ValueError(f"premature layers must be >= 0, got {self.hidden_states}")
        if not 0 <= self.relative_top < 1:
            raise ValueError(f"relative_top must be in [0, 1), got {self.relative_top}")

    def check_model(self, num_layers: int) -> None:
        """Raise unless every candidate is a hidden state below the final layer."""
        bad = [j for j in self.hidden_states if j >= num_layers]
        if bad:
            raise ValueError(
                f"DoLa premature layers {bad} are not below the final layer "
                f"(the model has {num_layers} decoder layers)"
            )

    def target_log_probs(
        self, model: nn.Module, features: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, 1 + K, d)`` features, ``(N,)`` targets → (contrastive log-scores ``(N,)``
        float64, greedy ``(N,)`` bool), on the CPU. The scores are summed as they are, as
        the authors do (masked tokens count ``-1000``)."""
        if features.ndim != 3 or features.shape[1] != 1 + len(self.hidden_states):
            raise ValueError(
                f"DoLa expects (N, {1 + len(self.hidden_states)}, d) features, "
                f"got {tuple(features.shape)}"
            )
        final = torch.log_softmax(lm_head_logits(model, features[:, 0]), dim=-1)
        norm = final_norm(model)
        best_jsd = torch.full((features.shape[0],), -math.inf, device=final.device)
        premature = torch.empty_like(final)
        for k in range(len(self.hidden_states)):
            candidate = torch.log_softmax(lm_head_logits(model, norm(features[:, 1 + k])), -1)
            jsd = jensen_shannon(final, candidate)
            better = jsd > best_jsd
            premature[better] = candidate[better]
            best_jsd = torch.where(better, jsd, best_jsd)
        contrast = final - premature
        if self.post_softmax:
            contrast = torch.log_softmax(contrast, dim=-1)
        if self.relative_top > 0:
            floor = final.max(dim=-1, keepdim=True).values + math.log(self.relative_top)
            contrast = contrast.masked_fill(final < floor, -1000.0)
        return _pick(contrast, targets, None)


def _pick(
    scores: torch.Tensor, targets: torch.Tensor, log_normaliser: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's target score (minus its log-normaliser) in float64, and whether the
    target is the row's arg-max; both on the CPU."""
    targets = targets.to(scores.device)
    picked = scores.gather(1, targets[:, None])[:, 0].double()
    if log_normaliser is not None:
        # in float64: summed over many tokens, float32 rounding would add up
        picked = picked - log_normaliser
    return picked.cpu(), (scores.argmax(-1) == targets).cpu()


def jensen_shannon(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence (nats) between rows of two log-distributions ``(N, V)``."""
    log_m = torch.logaddexp(log_p, log_q) - math.log(2)
    kl_pm = (log_p.exp() * (log_p - log_m)).sum(-1)
    kl_qm = (log_q.exp() * (log_q - log_m)).sum(-1)
    return 0.5 * (kl_pm + kl_qm)


def dola_buckets(num_layers: int, size: int = 3) -> dict[str, tuple[int, ...]]:
    """Candidate premature layers (``output_hidden_states`` indices), as in the DoLa paper's
    buckets: ``size`` evenly spaced layers from the lower half (``early``) and from the
    upper half below the final layer (``late``). The paper takes every second layer of a
    bucket (8 candidates for 32 layers); each candidate costs one more LM-head pass per
    scored token, so the default keeps 3."""
    half = num_layers // 2
    step = max(1, -(-half // size))
    return {
        "early": tuple(range(0, half, step))[:size],
        "late": tuple(range(half, num_layers, step))[:size],
    }


def parse_premature_layers(spec: str | Sequence[int], num_layers: int) -> tuple[int, ...]:
    """``"early"`` / ``"late"`` (see :func:`dola_buckets`) or comma-separated indices."""
    if isinstance(spec, str):
        buckets = dola_buckets(num_layers)
        if spec in buckets:
            return buckets[spec]
        try:
            layers = tuple(int(part) for part in spec.split(",") if part.strip())
        except ValueError as error:
            raise ValueError(
                f"bad DoLa layers {spec!r}: use 'early', 'late' or indices such as '0,2,4'"
            ) from error
    else:
        layers = tuple(int(j) for j in spec)
    if not layers:
        raise ValueError(f"bad DoLa layers {spec!r}: none given")
    if any(not 0 <= j < num_layers for j in layers):
        raise ValueError(f"DoLa layers {layers} must be in 0..{num_layers - 1}")
    return layers
