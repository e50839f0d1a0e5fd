"""Streaming statistics of a SEA fit: float64 sums per layer, and their spectra.

For each of ``L`` layers the statistics keep ``Σ φ(h) φ(h+)^T`` and ``Σ φ(h) φ(h-)^T``
``(d, d)``, the sums ``Σ φ(h)``, ``Σ φ(h+)``, ``Σ φ(h-)`` ``(d,)`` and the count ``N``;
everything the (centred or uncentred) cross-covariances and the layer signature need.
Sums add, so any split of the data into batches (or processes) gives the same statistics
up to round-off. For a non-linear feature map φ (Φ-SEA) they also count, per layer, the
neutral coordinates whose float32 round trip ``φ⁻¹(φ(h))`` is lossy.

While ``N < d`` they can also keep the activations themselves and take the SVD on
``N``-dimensional factors (method.md, "thin" route): with ``X`` the ``(N, d)`` neutral
features (centred if asked) and ``X^T = Q R`` (thin QR), ``Ω± = X^T Y± / N = Q (R Y± / N)``,
so the SVD ``R Y± / N = W S V^T`` of an ``(N, d)`` matrix gives ``U± = Q W`` and the same
singular values as the ``(d, d)`` SVD: ``O(d N^2)`` instead of ``O(d^3)`` work. The
subspaces (hence the projections) are the same as the dense route's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .features import get_feature_map
from .options import Feature, SvdRoute

ArrayLike = torch.Tensor | np.ndarray
"""Activations as a torch tensor or a numpy array."""

Spectrum = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""``(U+ (d, m), s+ (m,), U- (d, m), s- (m,))`` of one layer."""


def as_activations(x: ArrayLike, name: str) -> torch.Tensor:
    """``x`` as a detached floating-point tensor of shape ``(N, L, d)`` (not copied)."""
    tensor = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if tensor.ndim != 3:
        raise ValueError(f"{name} must have shape (N, layers, d), got {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {tensor.dtype}")
    return tensor.detach()


class SpectralStatistics:
    """Accumulates the statistics of SEA for ``layers`` with hidden size ``d``.

    Args:
        layers: the L model-layer indices the activations belong to (in array order).
        hidden_size: ``d``.
        centered: subtract per-feature sample means (over samples) from each set.
        feature: Φ-SEA feature map (``linear`` = plain SEA; names as
            :func:`~spectral_edit.core.features.get_feature_map` reads them).
        feature_scales: per-layer scale ``s`` (L floats); required for non-linear maps.
        device: where the sums live.
        svd: the :class:`~spectral_edit.core.options.SvdRoute`. The thin route keeps the
            raw activations (``3 N L d`` values in their own dtype) besides the sums;
            ``auto`` drops them as soon as ``N`` reaches ``d``, where the dense SVD is as
            cheap.
    """

    def __init__(
        self,
        layers: Sequence[int],
        hidden_size: int,
        *,
        centered: bool = False,
        feature: Feature | str = Feature.LINEAR,
        feature_scales: Sequence[float] | None = None,
        device: torch.device | str = "cpu",
        svd: SvdRoute | str = SvdRoute.AUTO,
    ) -> None:
        self.svd = SvdRoute.parse(svd, "svd")
        self.layers = tuple(int(i) for i in layers)
        self.hidden_size = int(hidden_size)
        self.centered = centered
        self.feature = get_feature_map(feature)
        self.feature_scales: tuple[float, ...] | None = None
        if not self.feature.is_identity:
            if feature_scales is None or len(feature_scales) != len(self.layers):
                raise ValueError(f"feature {str(feature)!r} needs one scale per layer")
            self.feature_scales = tuple(float(s) for s in feature_scales)
        layers_, d = len(self.layers), self.hidden_size
        device = torch.device(device)
        self.count = 0
        self.cross_pos = torch.zeros(layers_, d, d, dtype=torch.float64, device=device)
        self.cross_neg = torch.zeros(layers_, d, d, dtype=torch.float64, device=device)
        self.sum_neutral = torch.zeros(layers_, d, dtype=torch.float64, device=device)
        self.sum_pos = torch.zeros(layers_, d, dtype=torch.float64, device=device)
        self.sum_neg = torch.zeros(layers_, d, dtype=torch.float64, device=device)
        # per layer: neutral coordinates whose feature-map round trip is lossy (Φ-SEA)
        self.clipped_count = torch.zeros(layers_, dtype=torch.int64, device=device)
        self._spectra: dict[SvdRoute, list[Spectrum]] = {}  # route → spectra
        # raw (neutral, positive, negative) batches for the thin route; None once dropped
        self._samples: list[tuple[torch.Tensor, ...]] | None = (
            [] if self.svd is not SvdRoute.DENSE else None
        )

    def _scales(self) -> torch.Tensor:
        """The Φ-SEA scales as ``(1, L, 1)`` float64 on the statistics' device."""
        assert self.feature_scales is not None
        scales = torch.tensor(
            self.feature_scales, dtype=torch.float64, device=self.cross_pos.device
        )
        return scales[None, :, None]

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """``φ_s(x)`` of activations ``(N, L, d)``, float64 on the statistics' device."""
        x = x.to(device=self.cross_pos.device, dtype=torch.float64)
        if self.feature_scales is None:
            return x
        return self.feature.forward(x, self._scales())

    @torch.no_grad()
    def update(self, neutral: ArrayLike, positive: ArrayLike, negative: ArrayLike) -> None:
        """Add a batch; each array is ``(B, L, d)`` (torch or numpy), rows aligned."""
        h, hp, hn = (
            as_activations(x, name)
            for x, name in ((neutral, "neutral"), (positive, "positive"), (negative, "negative"))
        )
        expected = (h.shape[0], len(self.layers), self.hidden_size)
        for x, name in ((h, "neutral"), (hp, "positive"), (hn, "negative")):
            if tuple(x.shape) != expected:
                raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {expected}")
        if self._samples is not None:
            if self.svd is SvdRoute.AUTO and self.count + h.shape[0] >= self.hidden_size:
                self._samples = None
            else:
                device = self.cross_pos.device
                self._samples.append(tuple(x.to(device, copy=True) for x in (h, hp, hn)))
        if self.feature_scales is not None:
            scaled = h.to(self.cross_pos.device, torch.float64) / self._scales()
            self.clipped_count += self.feature.clipped(scaled).sum((0, 2))
        h, hp, hn = self._features(h), self._features(hp), self._features(hn)
        self.cross_pos += torch.einsum("nli,nlj->lij", h, hp)
        self.cross_neg += torch.einsum("nli,nlj->lij", h, hn)
        self.sum_neutral += h.sum(0)
        self.sum_pos += hp.sum(0)
        self.sum_neg += hn.sum(0)
        self.count += h.shape[0]
        self._spectra.clear()

    def _require_data(self) -> None:
        if self.count == 0:
            raise ValueError("no demonstrations were added to the fitter")

    def neutral_means(self) -> torch.Tensor:
        """``(L, d)`` float64: the neutral activations' mean per layer (feature space)."""
        self._require_data()
        return self.sum_neutral / self.count

    def covariances(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Ω+, Ω-)``, each ``(L, d, d)`` float64 (centred if the statistics are)."""
        self._require_data()
        n = self.count
        omega_pos = self.cross_pos / n
        omega_neg = self.cross_neg / n
        if self.centered:
            mean = self.sum_neutral / n
            omega_pos = omega_pos - torch.einsum("li,lj->lij", mean, self.sum_pos / n)
            omega_neg = omega_neg - torch.einsum("li,lj->lij", mean, self.sum_neg / n)
        return omega_pos, omega_neg

    def signatures(self) -> torch.Tensor:
        """Per-layer signature ``(L,)``: nuclear norm of ``A = X Z^T / 2N`` (method.md)."""
        a = torch.stack([self.sum_pos, self.sum_neg], dim=-1) / (2 * self.count)
        return torch.linalg.svdvals(a).sum(-1)

    def clipped_shares(self) -> list[float]:
        """Per layer, the share of neutral coordinates (of ``N d``) whose float32
        feature-map round trip is lossy; all 0 for ``linear``."""
        self._require_data()
        return (self.clipped_count.double() / (self.count * self.hidden_size)).tolist()

    @property
    def svd_route(self) -> SvdRoute:
        """The route :meth:`spectra` takes now: ``thin`` while activations are kept."""
        return SvdRoute.THIN if self._samples is not None else SvdRoute.DENSE

    def spectra(self, route: SvdRoute | str | None = None) -> list[Spectrum]:
        """Per layer ``(U+, s+, U-, s-)``: left singular vectors ``(d, m)`` and descending
        singular values ``(m,)`` of Ω+ and Ω-, with ``m = d`` on the dense route and
        ``m = min(N, d)`` on the thin one (the other singular values are zero); computed
        once per route until the next ``update``. ``route``: default :attr:`svd_route`."""
        chosen = self.svd_route if route is None else SvdRoute.parse(route, "route")
        if chosen is SvdRoute.AUTO:
            chosen = self.svd_route
        if chosen is SvdRoute.THIN and self._samples is None:
            raise ValueError("the thin SVD route needs the activations, which were not kept")
        self._require_data()
        if chosen not in self._spectra:
            self._spectra[chosen] = (
                self._thin_spectra() if chosen is SvdRoute.THIN else self._dense_spectra()
            )
        return self._spectra[chosen]

    def _dense_spectra(self) -> list[Spectrum]:
        omega_pos, omega_neg = self.covariances()
        spectra = []
        for index in range(len(self.layers)):
            u_pos, s_pos, _ = torch.linalg.svd(omega_pos[index])
            u_neg, s_neg, _ = torch.linalg.svd(omega_neg[index])
            spectra.append((u_pos, s_pos, u_neg, s_neg))
        return spectra

    def _thin_spectra(self) -> list[Spectrum]:
        assert self._samples is not None
        h, hp, hn = (self._features(torch.cat(parts)) for parts in zip(*self._samples, strict=True))
        n = self.count
        spectra = []
        for index in range(len(self.layers)):
            x, yp, yn = h[:, index], hp[:, index], hn[:, index]
            if self.centered:
                # centring x alone centres the product: (x - 1 x̄)ᵀ 1 = 0, so
                # (x - 1 x̄)ᵀ (y - 1 ȳ) = (x - 1 x̄)ᵀ y
                x = x - x.mean(0)
            q, r = torch.linalg.qr(x.T)  # (d, m), (m, N)
            w_pos, s_pos, _ = torch.linalg.svd(r @ yp / n, full_matrices=False)  # (m, m), (m,)
            w_neg, s_neg, _ = torch.linalg.svd(r @ yn / n, full_matrices=False)
            spectra.append((q @ w_pos, s_pos, q @ w_neg, s_neg))
        return spectra
