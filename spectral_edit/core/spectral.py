"""The maths of SEA, written once: ranks from energy, projections, and the edit.

Shapes: ``d`` hidden size; ``U+`` is ``(d, k+)`` and ``U-`` is ``(d, k-)`` with
orthonormal columns. ``P+ = U+ U+^T`` and ``P- = I - U- U-^T`` are never formed densely
on the hot path: ``P+ h = U+ (U+^T h)`` and ``P- h = h - U- (U-^T h)`` cost ``O(d k)``.
"""

from __future__ import annotations

import torch

from .features import FeatureMap
from .options import Merge


def rank_for_energy(singular_values: torch.Tensor, ratio: float) -> int:
    """Smallest ``k`` with ``sum_{j<=k} s_j^2 / sum_j s_j^2 >= ratio``, clamped to ``[1, d]``.

    ``singular_values`` must be sorted in descending order; ``ratio`` in ``(0, 1]``.
    """
    if not 0 < ratio <= 1:
        raise ValueError(f"energy ratio must be in (0, 1], got {ratio}")
    energy = singular_values.double().square()
    total = energy.sum()
    if not torch.isfinite(total) or total <= 0:
        raise ValueError("cannot rank a zero (or non-finite) cross-covariance")
    fractions = energy.cumsum(0) / total
    k = int(torch.searchsorted(fractions, torch.tensor(ratio, dtype=fractions.dtype)).item()) + 1
    return max(1, min(k, singular_values.numel()))


def choose_rank(singular_values: torch.Tensor, ratio: float, rank: int | None, name: str) -> int:
    """``rank`` if given (checked to be in ``1..m`` for ``m`` singular values), else
    :func:`rank_for_energy` of ``ratio``; ``name`` labels the error (e.g. ``"pos_rank"``)."""
    if rank is None:
        return rank_for_energy(singular_values, ratio)
    if not 1 <= rank <= singular_values.numel():
        raise ValueError(f"{name} must be in 1..{singular_values.numel()}, got {rank}")
    return int(rank)


def subspaces_coincide(pos: torch.Tensor, neg: torch.Tensor, tolerance: float = 1e-10) -> bool:
    """Whether factors ``(d, k+)`` and ``(d, k-)`` with orthonormal columns span one
    subspace (``k+ == k-`` and every principal cosine ``>= 1 − tolerance``). Then
    ``P+ h + P- h = h`` for every ``h``: the edit is the identity. The default tolerance
    is far above float64 round-off (exactly shared spans give ``1 − cos ≈ 1e-15``) and far
    below subspaces that are merely close (``1 − cos ≈ 1e-7`` still edits)."""
    if pos.shape != neg.shape:
        return False
    cosines = torch.linalg.svdvals(pos.double().T @ neg.double())
    return bool(cosines.min() >= 1 - tolerance)


def energy_fractions(singular_values: torch.Tensor) -> torch.Tensor:
    """Cumulative explained-energy fractions ``(d,)`` of descending singular values."""
    energy = singular_values.double().square()
    return energy.cumsum(0) / energy.sum()


def energy_shares(singular_values: torch.Tensor) -> torch.Tensor:
    """Each direction's share ``s_j² / Σ s²`` of the energy ``(m,)`` (float64, summing to
    1; the differences of :func:`energy_fractions`)."""
    energy = singular_values.double().square()
    return energy / energy.sum()


def dense_projections(pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense ``(P+, P-)``, each ``(d, d)``, from factors ``(d, k+)`` and ``(d, k-)``.

    For analysis and tests only; the edit itself never forms them.
    """
    eye = torch.eye(pos.shape[0], dtype=pos.dtype, device=pos.device)
    return pos @ pos.T, eye - neg @ neg.T


def spectral_edit(
    h: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    *,
    merge: Merge | str = Merge.NORM,
    alpha: float = 1.0,
    feature: FeatureMap | None = None,
    scale: torch.Tensor | float = 1.0,
    mean: torch.Tensor | None = None,
) -> torch.Tensor:
    """Edit activations ``h`` ``(..., d)`` of one layer; returns the same shape and dtype.

    ``u = φ_s(h)``; ``c = u − μ`` (``mean`` μ ``(d,)``, the fit-time neutral mean in
    feature space; ``c = u`` without it, the paper's edit); ``z = P+ c + P- c``; merge
    ``norm``: ``z · ‖c‖ / ‖z‖`` per token, ``mean``: ``z / 2``; ``h' = φ_s^{-1}(μ + z)``
    (sign from ``h`` where φ needs it); result ``h + α (h' − h)``. ``pos``/``neg``/``mean``
    must share ``h``'s device. Half-precision inputs are computed in float32.
    """
    merge = Merge.parse(merge, "merge")
    compute = torch.float32 if h.dtype in (torch.float16, torch.bfloat16) else h.dtype
    x = h.to(compute)
    pos = pos.to(compute)
    neg = neg.to(compute)
    u = x if feature is None or feature.is_identity else feature.forward(x, scale)
    c = u if mean is None else u - mean.to(compute)
    z = (c @ pos) @ pos.T + c - (c @ neg) @ neg.T
    if merge is Merge.NORM:
        tiny = torch.finfo(compute).tiny
        z = z * (c.norm(dim=-1, keepdim=True) / z.norm(dim=-1, keepdim=True).clamp_min(tiny))
    else:
        z = z / 2
    if mean is not None:
        z = z + mean.to(compute)
    edited = z if feature is None or feature.is_identity else feature.inverse(z, scale, x)
    return (x + alpha * (edited - x)).to(h.dtype)
