"""The greedy next token without every float32 logit: a bfloat16 screen of the LM head
whose error is bounded, then float32 logits for the few tokens the screen cannot rule out.

Greedy decoding needs only the arg-max of the LM head's logits, and on a CPU with
bfloat16 dot products (AVX-512 BF16) a bfloat16 product of the hidden states with the
head's weight costs about a quarter of the float32 one; for a large vocabulary (Gemma's
262k tokens) that product costs more than the rest of a decoding step. For head rows
``w_v`` and a final hidden state ``h`` (``K`` wide), the screened logit ``a_v`` (inputs
rounded to bfloat16, unit roundoff ``u = 2^-8``; products summed in float32; the result
rounded to bfloat16) differs from the float32 logit by at most

    ``slack_v = c₁·|a_v| + c₂·‖w_v‖·‖h‖``,  ``c₁ = 2u``,  ``c₂ = 2·(2u + u² + 3γ_K)``

(``γ_K = K·2^-24/(1 − K·2^-24)``, float32 summation; Cauchy–Schwarz bounds ``Σ|w_i h_i|``;
both constants carry a factor 2 of margin for the hardware's rounding of partial sums).
Every token whose upper end ``a_v + slack_v`` reaches the largest lower end
``max_u (a_u − slack_u)`` is a candidate, so the arg-max is always among them; the
candidates' logits are then computed in float32 and finished exactly as
:func:`~.heads.lm_head_logits` finishes them (scales, soft-capping: non-decreasing, so
the screen may ignore them), and the first maximum is taken, as ``argmax`` does over all
tokens. A finish can tie tokens that differ before it (soft-capping saturates): where a
ruled-out token's finished upper end reaches the maximum found, it joins the candidates
and the maximum is taken again. The result is the float32 arg-max up to the summation
order of one float32 dot product (a float32 product over a different set of rows, or a
different batch, may already round differently at that level).

Without the screen (no fast bfloat16, or a head it is not exact for) the arg-max is still
taken without the full ``B × V`` logits: the head's rows are read in blocks of
``VOCAB_BLOCK`` tokens, each block's finished logits reduced to its first maximum at once
(a block stays in cache; on a CPU this is 1.2–1.7× faster than one product and one
``argmax``), and a later block wins only where its maximum is strictly larger, which is
the first maximum over all tokens; a few rows take one ``weight @ hiddenᵀ`` product
(``FEW_ROWS``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .heads import (
    decoder_and_head,
    finish_logits,
    finishes_logits,
    lm_head_logits,
    logits_monotone,
)

UNIT_ROUNDOFF = 2.0**-8
"""bfloat16's unit roundoff (8 significant bits, rounding to nearest)."""

SCREEN_ROWS = 32
"""Hidden states screened together (each holds ``rows × vocabulary`` float32 values)."""

VOCAB_BLOCK = 4096
"""Head rows per product where the arg-max is taken block by block."""

FEW_ROWS = 16
"""Up to this many hidden states, the unscreened arg-max takes ``weight @ hiddenᵀ``: the
head's weight streamed once through a kernel that packs only the small operand (on a
CPU 1.1–3× faster than ``F.linear`` for 2–16 rows, slower beyond ~32)."""


def bfloat16_is_fast(device: torch.device) -> bool:
    """Whether bfloat16 matrix products beat float32 ones on ``device``: a CPU with
    bfloat16 dot products (oneDNN's check). Elsewhere the screen is not used."""
    if device.type != "cpu":
        return False
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else False


class GreedyHead:
    """``lm_head_logits(model, hidden).argmax(-1)``, screened in bfloat16 where that is
    exact and faster (module docstring): a float32 ``nn.Linear`` LM head on a CPU with
    bfloat16 dot products, whose finishing of the logits is monotone; elsewhere, for a
    plain ``nn.Linear`` head of any dtype, block by block (``VOCAB_BLOCK``); else from
    the whole logits.

    Holds a bfloat16 copy of the head's weight and its rows' norms while in use (for
    Gemma 3 270M: 335 MB and 1 MB). ``screen``: ``None`` = where it pays (above);
    ``False`` = never; ``True`` = wherever it is exact (any device; for tests)."""

    def __init__(self, model: nn.Module, *, screen: bool | None = None) -> None:
        self.model = model
        _, head = decoder_and_head(model)
        weight = getattr(head, "weight", None)
        self.blockwise = (  # a plain linear head whose weight is here
            type(head) is nn.Linear
            and isinstance(weight, torch.Tensor)
            and weight.device.type != "meta"  # not offloaded by accelerate
        )
        exact = (
            self.blockwise
            and weight.dtype == torch.float32  # type: ignore[union-attr]
            and logits_monotone(model)
        )
        fast = exact and bfloat16_is_fast(weight.device)  # type: ignore[union-attr]
        self.screening = exact and (fast if screen is None else screen)
        if self.blockwise:
            assert isinstance(head, nn.Linear)
            self.weight, self.bias = head.weight.detach(), head.bias
        if self.screening:
            self.low = self.weight.to(torch.bfloat16)
            self.norms = self.weight.norm(dim=-1)  # (V,)
            width = self.weight.shape[1]
            gamma = width * 2.0**-24 / (1 - width * 2.0**-24)
            u = UNIT_ROUNDOFF
            self.relative, self.normwise = 2 * u, 2 * (2 * u + u * u + 3 * gamma)
            self.finishes = finishes_logits(model)

    @torch.no_grad()
    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        """Greedy token ids ``(B,)`` (int64, on the head's device) of final hidden states
        ``hidden`` ``(B, d)``."""
        if not self.blockwise or not bool(torch.isfinite(hidden).all()):
            return lm_head_logits(self.model, hidden).argmax(-1)
        if not self.screening:
            return self._blockwise(hidden.to(self.weight.device, self.weight.dtype))
        hidden = hidden.to(self.weight.device, torch.float32)
        return torch.cat(
            [
                self._screened(hidden[start : start + SCREEN_ROWS])
                for start in range(0, hidden.shape[0], SCREEN_ROWS)
            ]
        )

    def _blockwise(self, hidden: torch.Tensor) -> torch.Tensor:
        """The first maximum of the finished logits, ``VOCAB_BLOCK`` head rows at a time;
        up to ``FEW_ROWS`` hidden states as one ``weight @ hiddenᵀ`` product instead."""
        if hidden.shape[0] <= FEW_ROWS:
            logits = torch.mm(self.weight, hidden.T)  # (V, B)
            if self.bias is not None:
                logits += self.bias[:, None]
            return finish_logits(self.model, logits.float()).argmax(0)
        best = index = None
        for start in range(0, self.weight.shape[0], VOCAB_BLOCK):
            stop = start + VOCAB_BLOCK
            bias = None if self.bias is None else self.bias[start:stop]
            logits = finish_logits(
                self.model, F.linear(hidden, self.weight[start:stop], bias).float()
            )
            at = logits.argmax(-1, keepdim=True)
            top = logits.gather(-1, at).squeeze(-1)
            if best is None or index is None:
                best, index = top, at.squeeze(-1) + start
            else:
                better = top > best  # ties keep the earlier token
                best = torch.where(better, top, best)
                index = torch.where(better, at.squeeze(-1) + start, index)
        assert index is not None  # a head has at least one row
        return index

    def candidates(self, hidden: torch.Tensor) -> torch.Tensor:
        """Which tokens the screen keeps for each row: bool ``(B, V)``."""
        return self._bounds(hidden)[0]

    def _bounds(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The candidates ``(B, V)`` and every token's upper end ``a_v + slack_v``."""
        approx = F.linear(hidden.to(torch.bfloat16), self.low).float()
        if self.bias is not None:
            approx += self.bias.float()
        slack = approx.abs().mul_(self.relative)
        slack.addcmul_(hidden.norm(dim=-1, keepdim=True) * self.normwise, self.norms[None])
        slack.add_(torch.finfo(torch.float32).tiny)  # flushed subnormals
        lowest = (approx - slack).amax(dim=-1, keepdim=True)
        upper = approx.add_(slack)
        return upper >= lowest, upper

    def _screened(self, hidden: torch.Tensor) -> torch.Tensor:
        keep, upper = self._bounds(hidden)
        winner, best = self._exact(hidden, keep)
        if not self.finishes:
            return winner
        # a finish that saturates (soft-capping) or rounds can tie a token ruled out
        # above with the best: any token whose finished upper end reaches it might
        reach = finish_logits(self.model, upper) >= best[:, None]
        if bool((reach & ~keep).any()):
            winner, _ = self._exact(hidden, keep | reach)
        return winner

    def _exact(self, hidden: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The first maximum of each row's finished float32 logits over its ``keep``
        tokens: token ids ``(B,)`` and the maxima ``(B,)``."""
        union = keep.any(dim=0).nonzero().squeeze(1)  # ascending token ids
        bias = None if self.bias is None else self.bias[union]
        exact = finish_logits(self.model, F.linear(hidden, self.weight[union], bias).float())
        best, index = exact.masked_fill(~keep[:, union], float("-inf")).max(dim=-1)
        return union[index], best
