"""The maths of SEA, written once: ranks from energy, projections, and the edit.

Shapes: ``d`` hidden size; ``U+`` is ``(d, k+)`` and ``U-`` is ``(d, k-)`` with
orthonormal columns. ``P+ = U+ U+^T`` and ``P- = I - U- U-^T`` are never formed densely
on the hot path: ``P+ h = U+ (U+^T h)`` and ``P- h = h - U- (U-^T h)`` cost ``O(d k)``,
and the edit takes both in two matrix products of the joined factors
(:class:`EditFactors`, built once per layer and device by the editor's hooks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .features import FeatureMap, compute_dtype
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


@dataclass(frozen=True)
class EditFactors:
    """One layer's factors joined for the edit, so that it costs two matrix products.

    ``read = [U+, U-]`` and ``write = [U+, −U-]``, each ``(d, k+ + k-)``, give
    ``c + (c read) writeᵀ = P+ c + P- c`` (``P- c = c − U- U-ᵀ c``). ``mean`` is μ ``(d,)``
    or ``None``. All three share one device and dtype: build them once per layer and
    device (:meth:`join`) and reuse them at every call of :func:`apply_edit`.
    """

    read: torch.Tensor
    write: torch.Tensor
    mean: torch.Tensor | None = None

    @classmethod
    def join(
        cls,
        pos: torch.Tensor,
        neg: torch.Tensor,
        mean: torch.Tensor | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> EditFactors:
        """From ``U+`` ``(d, k+)``, ``U-`` ``(d, k-)`` and μ ``(d,)``, on ``device`` with
        ``dtype`` (default: ``pos``'s)."""
        if pos.ndim != 2 or neg.ndim != 2 or pos.shape[0] != neg.shape[0]:
            shapes = f"{tuple(pos.shape)} and {tuple(neg.shape)}"
            raise ValueError(f"factors must be (d, k+) and (d, k-), got {shapes}")
        dtype = dtype or pos.dtype
        pos = pos.to(device=device or pos.device, dtype=dtype)
        neg = neg.to(device=pos.device, dtype=dtype)
        return cls(
            read=torch.cat([pos, neg], dim=1),
            write=torch.cat([pos, -neg], dim=1),
            mean=None if mean is None else mean.to(device=pos.device, dtype=dtype),
        )


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
    """Edit activations ``h`` ``(..., d)`` of one layer with factors ``U+`` ``(d, k+)``
    and ``U-`` ``(d, k-)``; :func:`apply_edit` on :meth:`EditFactors.join` of them (see it
    for the maths). ``pos``/``neg``/``mean`` must share ``h``'s device."""
    factors = EditFactors.join(pos, neg, mean, dtype=compute_dtype(h.dtype))
    return apply_edit(h, factors, merge=merge, alpha=alpha, feature=feature, scale=scale)


def apply_edit(
    h: torch.Tensor,
    factors: EditFactors,
    *,
    merge: Merge | str = Merge.NORM,
    alpha: float = 1.0,
    feature: FeatureMap | None = None,
    scale: torch.Tensor | float = 1.0,
) -> torch.Tensor:
    """Edit activations ``h`` ``(..., d)`` of one layer; returns the same shape and dtype.

    ``u = φ_s(h)``; ``c = u − μ`` (``factors.mean`` μ, the fit-time neutral mean in
    feature space; ``c = u`` without it, the paper's edit); ``z = P+ c + P- c``; merge
    ``norm``: ``z · ‖c‖ / ‖z‖`` per token, ``mean``: ``z / 2``; ``h' = φ_s^{-1}(μ + z)``
    (sign from ``h`` where φ needs it); result ``h + α (h' − h)`` (``torch.lerp``: exactly
    ``h`` at α = 0 and ``h'`` at α = 1). ``factors`` must share ``h``'s device. Half-
    precision inputs are computed in float32.
    """
    merge = Merge.parse(merge, "merge")
    compute = compute_dtype(h.dtype)
    x = h.to(compute)
    read = factors.read.to(compute)
    if feature is not None and feature.is_identity:
        feature = None
    u = x if feature is None else feature.forward(x, scale)
    mean = None if factors.mean is None else factors.mean.to(compute)
    c = (u if mean is None else u - mean).reshape(-1, read.shape[0])
    z = torch.addmm(c, c @ read, factors.write.to(compute).T)
    if merge is Merge.NORM:
        shrink = torch.linalg.vector_norm(z, dim=-1, keepdim=True).clamp_min_(
            torch.finfo(compute).tiny
        )
        z.mul_(torch.linalg.vector_norm(c, dim=-1, keepdim=True).div_(shrink))
    else:
        z.div_(2)
    if mean is not None:
        z.add_(mean)
    z = z.view(x.shape)
    edited = z if feature is None else feature.inverse(z, scale, x)
    return (edited if alpha == 1 else torch.lerp(x, edited, alpha)).to(h.dtype)
