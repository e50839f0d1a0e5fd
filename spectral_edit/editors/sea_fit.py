"""Streaming fitter: float64 sums per layer → :class:`SpectralEditor`.

For each layer the fitter keeps ``Σ φ(h) φ(h+)^T`` and ``Σ φ(h) φ(h-)^T`` ``(d, d)``,
the sums ``Σ φ(h)``, ``Σ φ(h+)``, ``Σ φ(h-)`` ``(d,)`` and the count ``N``; everything the
(centred or uncentred) cross-covariances and the layer signature need. Sums add, so any
split of the data into batches (or processes) gives the same editor up to round-off.

While ``N < d`` it also keeps the activations themselves and takes the SVD on
``N``-dimensional factors (method.md, "thin" route): with ``X`` the ``(N, d)`` neutral
features (centred if asked) and ``X^T = Q R`` (thin QR), ``Ω± = X^T Y± / N = Q (R Y± / N)``,
so the SVD ``R Y± / N = W S V^T`` of an ``(N, d)`` matrix gives ``U± = Q W`` and the same
singular values as the ``(d, d)`` SVD: ``O(d N^2)`` instead of ``O(d^3)`` work. The
subspaces (hence the projections and the editor) are the same as the dense route's.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..core.features import get_feature_map, rms_scale
from ..core.spectral import MERGES, energy_fractions, rank_for_energy
from .sea import SpectralEditor

ArrayLike = torch.Tensor | np.ndarray
SVD_ROUTES = ("auto", "dense", "thin")
"""``dense``: SVD of the ``(d, d)`` cross-covariances; ``thin``: SVD of ``N``-dimensional
factors of the kept activations; ``auto``: thin while fewer than ``d`` demonstrations."""


def _as_tensor(x: ArrayLike, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if tensor.ndim != 3:
        raise ValueError(f"{name} must have shape (N, layers, d), got {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {tensor.dtype}")
    return tensor.detach()


class SpectralFitter:
    """Accumulates the statistics of SEA for ``layers`` of a model with hidden size ``d``.

    Args:
        layers: the L model-layer indices the activations belong to (in array order).
        hidden_size: ``d``.
        num_layers: the model's decoder layer count (stored in the editor for checks).
        centered: subtract per-feature sample means (over samples) from each set.
        feature: Φ-SEA feature map name (``linear`` = plain SEA).
        feature_scales: per-layer scale ``s`` (L floats); required for non-linear maps
            (``fit_from_arrays`` defaults it to each layer's neutral RMS).
        svd: one of :data:`SVD_ROUTES`. The thin route keeps the raw activations
            (``3 N L d`` values in their own dtype) besides the sums; ``auto`` drops them
            as soon as ``N`` reaches ``d``, where the dense SVD is as cheap.
    """

    def __init__(
        self,
        layers: Sequence[int],
        hidden_size: int,
        num_layers: int,
        *,
        centered: bool = False,
        feature: str = "linear",
        feature_scales: Sequence[float] | None = None,
        device: torch.device | str = "cpu",
        svd: str = "auto",
    ) -> None:
        if svd not in SVD_ROUTES:
            raise ValueError(f"svd must be one of {SVD_ROUTES}, not {svd!r}")
        self.svd = svd
        self.layers = tuple(int(i) for i in layers)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.centered = centered
        self.feature = get_feature_map(feature)
        if not self.feature.is_identity:
            if feature_scales is None or len(feature_scales) != len(self.layers):
                raise ValueError(f"feature {feature!r} needs one scale per layer")
            self.feature_scales: tuple[float, ...] | None = tuple(float(s) for s in feature_scales)
        else:
            self.feature_scales = None
        shape = (len(self.layers), self.hidden_size)
        opts = {"dtype": torch.float64, "device": device}
        self.count = 0
        self.cross_pos = torch.zeros(*shape, self.hidden_size, **opts)
        self.cross_neg = torch.zeros(*shape, self.hidden_size, **opts)
        self.sum_neutral = torch.zeros(shape, **opts)
        self.sum_pos = torch.zeros(shape, **opts)
        self.sum_neg = torch.zeros(shape, **opts)
        # per layer: neutral coordinates whose feature-map round trip is lossy (Φ-SEA)
        self.clipped_count = torch.zeros(len(self.layers), dtype=torch.int64, device=device)
        self._spectra: dict[str, list[tuple[torch.Tensor, ...]]] = {}  # route → spectra
        # raw (neutral, positive, negative) batches for the thin route; None once dropped
        self._samples: list[tuple[torch.Tensor, ...]] | None = [] if svd != "dense" else None

    def _scales(self) -> torch.Tensor:
        """The Φ-SEA scales as ``(1, L, 1)`` float64 on the fitter's device."""
        assert self.feature_scales is not None
        scales = torch.tensor(
            self.feature_scales, dtype=torch.float64, device=self.cross_pos.device
        )
        return scales[None, :, None]

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(device=self.cross_pos.device, dtype=torch.float64)
        if self.feature_scales is None:
            return x
        return self.feature.forward(x, self._scales())

    @torch.no_grad()
    def update(self, neutral: ArrayLike, positive: ArrayLike, negative: ArrayLike) -> None:
        """Add a batch; each array is ``(B, L, d)`` (torch or numpy), rows aligned."""
        h, hp, hn = (
            _as_tensor(x, name)
            for x, name in ((neutral, "neutral"), (positive, "positive"), (negative, "negative"))
        )
        expected = (h.shape[0], len(self.layers), self.hidden_size)
        for x, name in ((h, "neutral"), (hp, "positive"), (hn, "negative")):
            if tuple(x.shape) != expected:
                raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {expected}")
        if self._samples is not None:
            if self.svd == "auto" and self.count + h.shape[0] >= self.hidden_size:
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

    def covariances(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Ω+, Ω-)``, each ``(L, d, d)`` float64 (centred if the fitter is)."""
        if self.count == 0:
            raise ValueError("no demonstrations were added to the fitter")
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

    @property
    def svd_route(self) -> str:
        """The route :meth:`spectra` takes now: ``thin`` while activations are kept."""
        return "thin" if self._samples is not None else "dense"

    def spectra(
        self, route: str | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per layer ``(U+, s+, U-, s-)``: left singular vectors ``(d, m)`` and descending
        singular values ``(m,)`` of Ω+ and Ω-, with ``m = d`` on the dense route and
        ``m = min(N, d)`` on the thin one (the other singular values are zero); computed
        once per route until the next ``update``. ``route``: default :attr:`svd_route`."""
        route = route or self.svd_route
        if route == "thin" and self._samples is None:
            raise ValueError("the thin SVD route needs the activations, which were not kept")
        if self.count == 0:
            raise ValueError("no demonstrations were added to the fitter")
        if route not in self._spectra:
            self._spectra[route] = (
                self._thin_spectra() if route == "thin" else self._dense_spectra()
            )
        return self._spectra[route]

    def _dense_spectra(self) -> list[tuple[torch.Tensor, ...]]:
        omega_pos, omega_neg = self.covariances()
        spectra = []
        for index in range(len(self.layers)):
            u_pos, s_pos, _ = torch.linalg.svd(omega_pos[index])
            u_neg, s_neg, _ = torch.linalg.svd(omega_neg[index])
            spectra.append((u_pos, s_pos, u_neg, s_neg))
        return spectra

    def _thin_spectra(self) -> list[tuple[torch.Tensor, ...]]:
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
            layer = []
            for y in (yp, yn):
                w, s, _ = torch.linalg.svd(r @ y / n, full_matrices=False)  # (m, m), (m,)
                layer += [q @ w, s]
            spectra.append(tuple(layer))
        return spectra

    def fit(
        self,
        *,
        pos_ratio: float = 0.99,
        neg_ratio: float = 0.99,
        pos_rank: int | None = None,
        neg_rank: int | None = None,
        edit_layers: Sequence[int] | None = None,
        site: str = "residual",
        merge: str = "norm",
        alpha: float = 1.0,
        layer_path: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> SpectralEditor:
        """SVD each layer's Ω± and keep the top ``k+`` / ``k-`` left singular vectors.

        Ranks come from energy ratios unless ``pos_rank``/``neg_rank`` fix them.
        """
        if merge not in MERGES:
            raise ValueError(f"merge must be one of {MERGES}, not {merge!r}")
        route = self.svd_route
        if route == "thin" and max(pos_rank or 0, neg_rank or 0) > min(
            self.count, self.hidden_size
        ):
            route = "dense"  # ranks beyond N: directions of the null space, from the d × d SVD
        pos_factors, neg_factors, stats = [], [], []
        for layer, (u_pos, s_pos, u_neg, s_neg) in zip(
            self.layers, self.spectra(route), strict=True
        ):
            k_pos = _rank(s_pos, pos_ratio, pos_rank, "pos_rank")
            k_neg = _rank(s_neg, neg_ratio, neg_rank, "neg_rank")
            pos_factors.append(u_pos[:, :k_pos].float().cpu().contiguous())
            neg_factors.append(u_neg[:, :k_neg].float().cpu().contiguous())
            e_pos, e_neg = energy_fractions(s_pos), energy_fractions(s_neg)
            stats.append(
                {
                    "layer": layer,
                    "pos_rank": k_pos,
                    "neg_rank": k_neg,
                    "pos_energy_top1": float(e_pos[0]),
                    "neg_energy_top1": float(e_neg[0]),
                    "pos_energy_kept": float(e_pos[k_pos - 1]),
                    "neg_energy_kept": float(e_neg[k_neg - 1]),
                }
            )
        signatures = self.signatures()
        clipped = (self.clipped_count.double() / (self.count * self.hidden_size)).tolist()
        for entry, value, share in zip(stats, signatures.tolist(), clipped, strict=True):
            entry["signature"] = value
            if self.feature_scales is not None:
                entry["clipped_share"] = share
        if any(share > 0 for share in clipped):
            worst = max(range(len(clipped)), key=clipped.__getitem__)
            warnings.warn(
                f"feature map {self.feature.name!r}: {clipped[worst]:.3%} of the neutral "
                f"activation coordinates of layer {self.layers[worst]} (scale "
                f"{self.feature_scales[worst]:.4g}) lie where the float32 round trip "
                "φ⁻¹(φ(h)) is lossy, so every edited token changes there whatever the "
                "projections; pass larger feature_scales (sea fit --feature-scales) or use "
                "elu or linear. Per-layer shares: the editor's layer_stats 'clipped_share'.",
                stacklevel=2,
            )
        info = {
            "n_demonstrations": self.count,
            "centered": self.centered,
            "svd": route,
            "pos_ratio": None if pos_rank is not None else pos_ratio,
            "neg_ratio": None if neg_rank is not None else neg_ratio,
            "layer_stats": stats,
            **dict(metadata or {}),
        }
        return SpectralEditor(
            layers=self.layers,
            pos_factors=tuple(pos_factors),
            neg_factors=tuple(neg_factors),
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            site=site,
            merge=merge,
            alpha=alpha,
            feature=self.feature.name,
            feature_scales=self.feature_scales,
            edit_layers=None if edit_layers is None else tuple(sorted(set(edit_layers))),
            layer_path=layer_path,
            metadata=info,
        )


def _rank(singular_values: torch.Tensor, ratio: float, rank: int | None, name: str) -> int:
    if rank is None:
        return rank_for_energy(singular_values, ratio)
    if not 1 <= rank <= singular_values.numel():
        raise ValueError(f"{name} must be in 1..{singular_values.numel()}, got {rank}")
    return int(rank)


def default_feature_scales(neutral: ArrayLike) -> list[float]:
    """Per-layer RMS of neutral activations ``(N, L, d)``: the default Φ-SEA scales."""
    tensor = _as_tensor(neutral, "neutral")
    return [rms_scale(tensor[:, index]) for index in range(tensor.shape[1])]


def fit_from_arrays(
    neutral: ArrayLike,
    positive: ArrayLike,
    negative: ArrayLike,
    *,
    pos_ratio: float = 0.99,
    neg_ratio: float = 0.99,
    layers: Sequence[int] | None = None,
    num_layers: int | None = None,
    centered: bool = False,
    feature: str = "linear",
    feature_scales: Sequence[float] | None = None,
    batch_size: int | None = None,
    svd: str = "auto",
    **fit_options: Any,
) -> SpectralEditor:
    """Fit an editor from activation arrays in one call.

    Args:
        neutral, positive, negative: ``(N, L, d)`` arrays (torch or numpy), rows aligned.
        pos_ratio, neg_ratio: energy ratios in ``(0, 1]`` choosing ``k+`` and ``k-``.
        layers: the model layers the L slices belong to (default ``0..L-1``).
        num_layers: the model's layer count (default ``max(layers) + 1``).
        centered: centre each set before the cross-covariance.
        feature: ``linear``, ``tanh``, ``elu`` or ``squared-exponential`` (Φ-SEA).
        feature_scales: per-layer scales; default the neutral activations' RMS per layer.
        batch_size: stream the arrays in batches of this size (same result).
        svd: the SVD route (:data:`SVD_ROUTES`; the same editor either way).
        **fit_options: passed to :meth:`SpectralFitter.fit` (``pos_rank``, ``merge``, ...).
    """
    h = _as_tensor(neutral, "neutral")
    layer_ids = list(range(h.shape[1])) if layers is None else list(layers)
    if len(layer_ids) != h.shape[1]:
        raise ValueError(f"{len(layer_ids)} layer ids for arrays with {h.shape[1]} layers")
    if feature != "linear" and feature_scales is None:
        feature_scales = default_feature_scales(h)
    fitter = SpectralFitter(
        layer_ids,
        h.shape[2],
        num_layers if num_layers is not None else max(layer_ids) + 1,
        centered=centered,
        feature=feature,
        feature_scales=feature_scales,
        svd=svd,
    )
    step = batch_size or h.shape[0]
    pos = _as_tensor(positive, "positive")
    neg = _as_tensor(negative, "negative")
    for start in range(0, h.shape[0], step):
        fitter.update(h[start : start + step], pos[start : start + step], neg[start : start + step])
    return fitter.fit(pos_ratio=pos_ratio, neg_ratio=neg_ratio, **fit_options)
