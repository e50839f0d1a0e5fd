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

Across K processes the statistics are either all-reduced (:meth:`SpectralStatistics.
all_reduce`: every rank holds every layer's sums) or sharded by layer
(:meth:`SpectralStatistics.shard_layers`: rank ``r`` keeps only its block of about
``L/K`` layers, with every rank's demonstrations in them). Sharded statistics keep each
rank's activations, not the ``d × d`` sums, until the sharding, which then reduces one
layer's sums at a time to its owner: no rank ever holds more than its own layers' sums
and one layer's partial sums.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .distributed import (
    all_gather_rows,
    all_reduce_sum,
    gather_rows_to,
    layer_block,
    owner_of,
    reduce_sum_to,
    world,
)
from .features import get_feature_map
from .options import Feature, SvdRoute, check_rank

ArrayLike = torch.Tensor | np.ndarray
"""Activations as a torch tensor or a numpy array."""

Spectrum = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""``(U+ (d, m), s+ (m,), U- (d, m), s- (m,))`` of one layer."""

SETS = ("neutral", "positive", "negative")
"""The three activation sets of a demonstration, in the order the statistics keep them."""

DEGENERATE_TOLERANCE = 1e-10
"""A cross-covariance (or a set's variance) counts as zero at a layer when it is below
this share of the scale its activations' second moments allow (round-off in float64 is
far smaller; any real signal far larger)."""


class FitError(ValueError):
    """The activations given cannot make a SEA editor: misshapen, non-finite, too few or
    too alike. The message names the layer(s) (model indices), the cause and what to do."""


def as_activations(x: ArrayLike, name: str) -> torch.Tensor:
    """``x`` as a detached floating-point tensor of shape ``(N, L, d)`` (not copied).

    Raises:
        FitError: another number of dimensions, or an integer dtype.
    """
    tensor = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if tensor.ndim != 3:
        raise FitError(f"{name} must have shape (N, layers, d), got {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise FitError(f"{name} must be floating point, got {tensor.dtype}")
    return tensor.detach()


def check_feature_scales(
    feature: str, feature_scales: Sequence[float] | None, layers: Sequence[int]
) -> None:
    """Raise :class:`FitError` unless a non-linear ``feature`` map has exactly one scale
    per layer of ``layers``, each finite and ``> 0`` (a linear map needs none)."""
    if feature_scales is not None and len(feature_scales) == len(layers):
        if all(math.isfinite(float(x)) and float(x) > 0 for x in feature_scales):
            return
        raise FitError(
            f"feature_scales must be finite and > 0 (sea fit --feature-scales), got "
            f"{tuple(feature_scales)}"
        )
    got = "none" if feature_scales is None else f"{len(feature_scales)}"
    raise FitError(
        f"feature {feature!r} needs one scale per layer: got {got} for the "
        f"{len(layers)} fitted layers {tuple(layers)}; pass {len(layers)} feature_scales "
        "(sea fit --feature-scales, comma-separated) or none for each layer's neutral RMS"
    )


def check_layer_ids(layers: Sequence[int]) -> tuple[int, ...]:
    """``layers`` as a tuple of distinct model layer indices ``>= 0``; :class:`FitError`
    otherwise (negative indices are resolved against a model by
    :func:`~spectral_edit.hf.layers.parse_layers`, not here)."""
    ids = tuple(int(i) for i in layers)
    if not ids or len(set(ids)) != len(ids) or min(ids) < 0:
        raise FitError(
            f"layers must be distinct model layer indices >= 0, got {ids} (resolve negative "
            "indices against the model with parse_layers)"
        )
    return ids


def check_ranks(hidden_size: int, **ranks: int | None) -> dict[str, int | None]:
    """Each fixed rank (``pos_rank=...``, ``neg_rank=...``; ``None`` = from the energy
    ratio) checked to be an integer in ``1..hidden_size``; :class:`FitError` otherwise."""
    checked = {}
    for name, rank in ranks.items():
        try:
            checked[name] = check_rank(name, rank)
        except ValueError as error:
            raise FitError(str(error)) from None
        if rank is not None and rank > hidden_size:
            raise FitError(
                f"{name} must be in 1..{hidden_size} (the hidden size: no more directions "
                f"exist), got {rank}"
            )
    return checked


def signature_from_sums(sum_pos: torch.Tensor, sum_neg: torch.Tensor, count: int) -> torch.Tensor:
    """The layer signature (method.md) ``(L,)`` from the per-layer sums ``Σ φ(h+)`` and
    ``Σ φ(h-)`` ``(L, d)`` of ``count`` demonstrations: the nuclear norm of
    ``A = X Z^T / 2N = [Σ φ(h+), Σ φ(h-)] / 2N`` ``(d, 2)``, the one-hot labels ``Z``
    summing each set's columns."""
    a = torch.stack([sum_pos, sum_neg], dim=-1) / (2 * count)
    return torch.linalg.svdvals(a).sum(-1)


def _non_finite_message(name: str, bad: torch.Tensor, layers: Sequence[int], first: int) -> str:
    """What :meth:`SpectralStatistics.update` says of non-finite ``name`` activations:
    ``bad`` is the ``(B, L)`` mask of rows and layers holding NaN or Inf, ``first`` the
    stream index of the batch's first row."""
    bad_layers = [layers[j] for j in bad.any(0).nonzero().flatten().tolist()]
    rows = bad.any(1).nonzero().flatten().tolist()
    return (
        f"{name} activations are not finite (NaN or Inf) at layer(s) "
        f"{', '.join(map(str, bad_layers))}, in {len(rows)} of {bad.shape[0]} demonstrations "
        f"of this batch (first: demonstration #{first + rows[0] + 1}); the model overflows "
        "there. Load it in float32 (sea --dtype float32), fit other layers (--layers), or "
        "check that demonstration"
    )


@dataclass(frozen=True)
class Shard:
    """What sharded statistics (:meth:`SpectralStatistics.shard_layers`) remember of the
    whole: every fitted layer (model indices, array order), their Φ-SEA scales, and the
    number of ranks sharing them (rank ``r`` holds the ``r``-th
    :func:`~spectral_edit.core.distributed.layer_block`)."""

    layers: tuple[int, ...]
    feature_scales: tuple[float, ...] | None
    size: int


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
        sharded: these statistics will be sharded by layer across the ranks of the
            default process group (:meth:`shard_layers`): until then they keep each
            batch given to :meth:`update` (by reference where it is already a float
            tensor on ``device``: do not modify it), never the ``d × d`` sums, whatever
            ``svd`` says (which still chooses the route after the sharding).
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
        sharded: bool = False,
    ) -> None:
        self.svd = SvdRoute.parse(svd, "svd")
        self.sharded = bool(sharded)
        self.shard: Shard | None = None
        """Set by :meth:`shard_layers`: the whole these statistics are one block of."""
        self.layers = check_layer_ids(layers)
        self.hidden_size = int(hidden_size)
        self.centered = centered
        self.feature = get_feature_map(feature)
        self.feature_scales: tuple[float, ...] | None = None
        if not self.feature.is_identity:
            check_feature_scales(str(self.feature.name), feature_scales, self.layers)
            assert feature_scales is not None
            self.feature_scales = tuple(float(s) for s in feature_scales)
        layers_, d = len(self.layers), self.hidden_size
        device = torch.device(device)
        self.device = device
        self.count = 0
        # Σ φ(h) φ(h±)ᵀ per layer, (L, d, d) each: allocated only off the thin route (the
        # dense route, or auto once N reaches d), so a thin fit takes O(N L d) memory
        self._cross: tuple[torch.Tensor, torch.Tensor] | None = None
        if self.svd is SvdRoute.DENSE and not self.sharded:
            self._cross = (self._zeros_cross(), self._zeros_cross())
        self.sum_neutral = torch.zeros(layers_, d, dtype=torch.float64, device=device)
        self.sum_pos = torch.zeros(layers_, d, dtype=torch.float64, device=device)
        self.sum_neg = torch.zeros(layers_, d, dtype=torch.float64, device=device)
        # per set (SETS order) and layer: Σ ‖φ(h)‖², for the scale of the degeneracy checks
        self.sum_sq = torch.zeros(3, layers_, dtype=torch.float64, device=device)
        # per layer: neutral coordinates whose feature-map round trip is lossy (Φ-SEA)
        self.clipped_count = torch.zeros(layers_, dtype=torch.int64, device=device)
        self._spectra: dict[SvdRoute, list[Spectrum]] = {}  # route → spectra
        # raw (neutral, positive, negative) batches for the thin route; None once dropped
        self._samples: list[tuple[torch.Tensor, ...]] | None = (
            [] if self.svd is not SvdRoute.DENSE or self.sharded else None
        )

    def _zeros_cross(self) -> torch.Tensor:
        d = self.hidden_size
        return torch.zeros(len(self.layers), d, d, dtype=torch.float64, device=self.device)

    @property
    def cross_pos(self) -> torch.Tensor:
        """``Σ φ(h) φ(h+)ᵀ`` per layer ``(L, d, d)`` float64 (materialised from the kept
        activations on first use on the thin route)."""
        return self._cross_sums()[0]

    @property
    def cross_neg(self) -> torch.Tensor:
        """``Σ φ(h) φ(h-)ᵀ`` per layer ``(L, d, d)`` float64 (as :attr:`cross_pos`)."""
        return self._cross_sums()[1]

    def _cross_sums(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The cross sums, computed once from the kept activations if not yet held (from
        then on every :meth:`update` adds to them too)."""
        if self._cross is None:
            cross = (self._zeros_cross(), self._zeros_cross())
            for h, hp, hn in self._samples or []:
                h, hp, hn = self._features(h), self._features(hp), self._features(hn)
                cross[0].add_(torch.einsum("nli,nlj->lij", h, hp))
                cross[1].add_(torch.einsum("nli,nlj->lij", h, hn))
            self._cross = cross
        return self._cross

    def _sides_differ(self) -> bool:
        """Whether the positive and negative sides differ beyond their sums: their cross
        sums where those are held, else their kept activations batch by batch (equal
        ones give equal cross sums, without materialising ``(L, d, d)``)."""
        if self._cross is not None or not self._samples:
            cross_pos, cross_neg = self._cross_sums()
            return not torch.equal(cross_pos, cross_neg)
        return any(not torch.equal(hp, hn) for _, hp, hn in self._samples)

    def _scales(self) -> torch.Tensor:
        """The Φ-SEA scales as ``(1, L, 1)`` float64 on the statistics' device."""
        assert self.feature_scales is not None
        scales = torch.tensor(self.feature_scales, dtype=torch.float64, device=self.device)
        return scales[None, :, None]

    def _features(self, x: torch.Tensor, first: int = 0) -> torch.Tensor:
        """``φ_s(x)`` of activations ``(N, M, d)`` of the layers ``first .. first+M-1`` (of
        :attr:`layers`' order; default all), float64 on the statistics' device."""
        x = x.to(device=self.device, dtype=torch.float64)
        if self.feature_scales is None:
            return x
        return self.feature.forward(x, self._scales()[:, first : first + x.shape[1]])

    def _checked(
        self, neutral: ArrayLike, positive: ArrayLike, negative: ArrayLike
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch as three ``(B, L, d)`` tensors, or :class:`FitError`: shapes that
        disagree (with each other or with the statistics), or NaN/Inf (naming the set,
        the layers and the first demonstration)."""
        h, hp, hn = (
            as_activations(x, name)
            for x, name in zip((neutral, positive, negative), SETS, strict=True)
        )
        expected = (h.shape[0], len(self.layers), self.hidden_size)
        for x, name in zip((h, hp, hn), SETS, strict=True):
            if tuple(x.shape) != expected:
                raise FitError(
                    f"{name} has shape {tuple(x.shape)}, expected {expected} (N demonstrations "
                    f"× {len(self.layers)} layers × hidden size {self.hidden_size}, rows aligned "
                    "with the neutral activations)"
                )
        for x, name in zip((h, hp, hn), SETS, strict=True):
            bad = ~torch.isfinite(x).all(-1)  # (B, L)
            if bool(bad.any()):
                raise FitError(_non_finite_message(name, bad, self.layers, self.count))
        return h, hp, hn

    @torch.no_grad()
    def update(self, neutral: ArrayLike, positive: ArrayLike, negative: ArrayLike) -> None:
        """Add a batch; each array is ``(B, L, d)`` (torch or numpy), rows aligned.

        Raises:
            FitError: misshapen or non-finite activations (nothing is added then), or
                statistics already sharded (:meth:`shard_layers`).
        """
        if self.shard is not None:
            raise FitError(
                "these statistics were sharded by layer (shard_layers): they take no more "
                "demonstrations"
            )
        h, hp, hn = self._checked(neutral, positive, negative)
        if self.sharded:  # keep the batch (no copy) until shard_layers; no d × d sums
            assert self._samples is not None
            self._samples.append(tuple(x.to(self.device) for x in (h, hp, hn)))
        elif self._samples is not None:
            if self.svd is SvdRoute.AUTO and self.count + h.shape[0] >= self.hidden_size:
                self._cross_sums()  # N reaches d: the dense route from here on
                self._samples = None
            else:
                self._samples.append(tuple(x.to(self.device, copy=True) for x in (h, hp, hn)))
        if self.feature_scales is not None:
            scaled = h.to(self.device, torch.float64) / self._scales()
            self.clipped_count += self.feature.clipped(scaled).sum((0, 2))
        h, hp, hn = self._features(h), self._features(hp), self._features(hn)
        if self._cross is not None:
            self._cross[0].add_(torch.einsum("nli,nlj->lij", h, hp))
            self._cross[1].add_(torch.einsum("nli,nlj->lij", h, hn))
        self.sum_neutral += h.sum(0)
        self.sum_pos += hp.sum(0)
        self.sum_neg += hn.sum(0)
        self.sum_sq += torch.stack([x.square().sum((0, 2)) for x in (h, hp, hn)])
        self.count += h.shape[0]
        self._spectra.clear()

    @torch.no_grad()
    def all_reduce(self) -> None:
        """Make these the statistics of every rank's demonstrations together: sums
        all-reduced over the default process group, and (thin route) the kept
        activations gathered in rank order, dropped on every rank where the total
        ``N`` reaches ``d`` under ``auto``. A no-op in one process. Every rank must
        call it (a collective), after its last :meth:`update`."""
        if self.shard is not None:
            raise FitError("these statistics were sharded by layer (shard_layers) already")
        if world()[1] == 1:
            return
        count = torch.tensor([self.count], dtype=torch.long)
        all_reduce_sum(count)
        total = int(count)
        thin = self.svd is SvdRoute.THIN or (self.svd is SvdRoute.AUTO and total < self.hidden_size)
        if thin:  # every rank still keeps its activations (its N is below the total)
            assert self._samples is not None
            shape = (0, len(self.layers), self.hidden_size)
            local = [torch.cat(parts) for parts in zip(*self._samples, strict=True)]
            local = local or [torch.zeros(shape, device=self.device)] * 3
            self._samples = [tuple(all_gather_rows(x) for x in local)]
            self._cross = None  # recomputed from all ranks' activations when asked
        else:
            self._cross_sums()  # a rank below d locally materialises its share first
            self._samples = None
        sums = (self.sum_neutral, self.sum_pos, self.sum_neg, self.sum_sq, self.clipped_count)
        for tensor in (*(() if thin else self._cross_sums()), *sums):
            all_reduce_sum(tensor)
        self.count = total
        self._spectra.clear()

    @torch.no_grad()
    def shard_layers(self) -> range:
        """Make these the statistics of every rank's demonstrations at this rank's block
        of the layers only, and return that block (array indices of :attr:`layers`).

        Rank ``r`` of K owns the ``r``-th contiguous
        :func:`~spectral_edit.core.distributed.layer_block` of the L layers (about
        ``L/K``; none where ``L < K``). Route (from ``svd`` and the total ``N``): dense,
        each layer's partial cross sums ``(2, d, d)`` are computed from this rank's kept
        activations and reduced to the layer's owner, one layer at a time
        (:func:`~spectral_edit.core.distributed.reduce_sum_to`: a reduce-scatter whose
        input is never whole); thin, each layer's rows are gathered at its owner. The
        ``(L, d)`` sums are all-reduced (they are small). Afterwards :attr:`layers`,
        :attr:`feature_scales` and every sum cover the block, :attr:`count` is the
        total and :attr:`shard` remembers the whole; no more :meth:`update`. One
        process: the block is every layer. Every rank must call it (a collective),
        after its last :meth:`update`, on statistics made with ``sharded=True``.
        """
        if not self.sharded or self.shard is not None:
            raise FitError("shard_layers needs statistics made with sharded=True, not sharded yet")
        rank, size = world()
        count = torch.tensor([self.count], dtype=torch.long)
        all_reduce_sum(count)
        total = int(count)
        thin = self.svd is SvdRoute.THIN or (self.svd is SvdRoute.AUTO and total < self.hidden_size)
        layers_ = len(self.layers)
        mine = layer_block(layers_, rank, size)
        if thin:
            owned: list[torch.Tensor] = []
            for index in range(layers_):
                rows = gather_rows_to(
                    self._layer_rows(index, raw=True), owner_of(index, layers_, size)
                )
                if rows is not None:
                    owned.append(rows)  # (N, 3, d): this layer's rows of every rank
            self._samples = [
                tuple(
                    torch.stack([rows[:, k] for rows in owned], dim=1)
                    if owned
                    else torch.zeros(total, 0, self.hidden_size, device=self.device)
                    for k in range(3)
                )
            ]
            self._cross = None
        else:
            d = self.hidden_size
            cross = torch.zeros(2, len(mine), d, d, dtype=torch.float64, device=self.device)
            for index in range(layers_):
                partial = self._local_cross(index)  # (2, d, d): this rank's rows only
                owner = owner_of(index, layers_, size)
                reduce_sum_to(partial, owner)
                if owner == rank:
                    cross[:, index - mine.start] = partial
                del partial
            self._samples = None
            self._cross = (cross[0], cross[1])
        for tensor in (
            self.sum_neutral,
            self.sum_pos,
            self.sum_neg,
            self.sum_sq,
            self.clipped_count,
        ):
            all_reduce_sum(tensor)
        self.shard = Shard(self.layers, self.feature_scales, size)
        self.layers = tuple(self.layers[i] for i in mine)
        if self.feature_scales is not None:
            self.feature_scales = tuple(self.feature_scales[i] for i in mine)
        block = slice(mine.start, mine.stop)
        self.sum_neutral = self.sum_neutral[block].clone()
        self.sum_pos = self.sum_pos[block].clone()
        self.sum_neg = self.sum_neg[block].clone()
        self.sum_sq = self.sum_sq[:, block].clone()
        self.clipped_count = self.clipped_count[block].clone()
        self.count = total
        self._spectra.clear()
        return mine

    def _layer_rows(self, index: int, raw: bool = False) -> torch.Tensor:
        """The kept rows of the layer at ``index`` (array order) as ``(n, 3, d)``: the
        neutral, positive and negative activations of every kept batch (``raw``: in
        their own dtype; else as float64 features)."""
        assert self._samples is not None
        sets = [
            torch.cat([part[:, index] for part in parts])
            if parts
            else torch.zeros(0, self.hidden_size, device=self.device)
            for parts in ([batch[k] for batch in self._samples] for k in range(3))
        ]
        rows = torch.stack(sets, dim=1)
        if raw:
            return rows
        return self._features(rows.reshape(-1, 1, self.hidden_size), index).reshape(rows.shape)

    def _local_cross(self, index: int) -> torch.Tensor:
        """This rank's ``(Σ φ(h) φ(h+)ᵀ, Σ φ(h) φ(h-)ᵀ)`` of the layer at ``index``, as
        ``(2, d, d)`` float64: from the cross sums where they are held, else from the
        kept activations."""
        if self._cross is not None:
            return torch.stack([self._cross[0][index], self._cross[1][index]])
        rows = self._layer_rows(index)  # (n, 3, d) features
        x = rows[:, 0]
        return torch.stack([x.T @ rows[:, 1], x.T @ rows[:, 2]])

    def _require_data(self) -> None:
        if self.count == 0:
            raise FitError("no demonstrations were added to the fitter")

    def variances(self) -> torch.Tensor:
        """``(3, L)`` float64: per set (:data:`SETS` order) and layer, the total variance
        ``E‖φ(h)‖² − ‖E φ(h)‖²`` of the activations over the demonstrations."""
        self._require_data()
        means = torch.stack([self.sum_neutral, self.sum_pos, self.sum_neg]) / self.count
        return (self.sum_sq / self.count - means.square().sum(-1)).clamp_min(0)

    def constant_sets(self) -> list[list[str]]:
        """Per layer, the sets (names of :data:`SETS`) whose activations do not vary over
        the demonstrations (all N identical up to :data:`DEGENERATE_TOLERANCE`)."""
        scale = self.sum_sq / self.count
        flat = self.variances() <= DEGENERATE_TOLERANCE * scale
        return [[SETS[k] for k in range(3) if bool(flat[k, j])] for j in range(len(self.layers))]

    def zero_cause(self, index: int, sign: str) -> str:
        """Why the cross-covariance Ω± (``sign`` ``"+"`` or ``"-"``) of the layer at
        ``index`` (array order) is zero, in words, with what to do."""
        other = "positive" if sign == "+" else "negative"
        scale = self.sum_sq[:, index] / self.count
        zero = [name for name, value in zip(SETS, scale.tolist(), strict=True) if value == 0]
        constant = [name for name in self.constant_sets()[index] if name in ("neutral", other)]
        constant = constant[:1]  # the neutral set when it is constant: one cause for Ω+ and Ω-
        if self.centered and self.count == 1:
            return (
                "a centred fit of 1 demonstration has nothing left after centring; add "
                "demonstrations or fit uncentred (centered=False; sea fit --no-centered)"
            )
        if any(name in zero for name in ("neutral", other)):
            found = [name for name in ("neutral", other) if name in zero]
            return (
                f"the {' and '.join(found)} activations are all zero there; fit other layers "
                "or another site"
            )
        if self.centered and constant:
            return (
                f"the {' and '.join(constant)} activations are identical across all "
                f"{self.count} demonstrations (duplicate lines or answers?), so centring "
                "removes them; use more, and different, demonstrations or fit uncentred "
                "(centered=False; sea fit --no-centered)"
            )
        return (
            f"the neutral and {other} activations are uncorrelated over the {self.count} "
            "demonstrations; use more, and different, demonstrations"
        )

    def zero_layers(self, spectra: Sequence[Spectrum]) -> list[tuple[int, str]]:
        """``(index, sign)`` (array order, ``"+"``/``"-"``) of each cross-covariance whose
        top singular value in ``spectra`` is zero: below :data:`DEGENERATE_TOLERANCE`
        of its bound ``sqrt(E‖φ(h)‖² E‖φ(h±)‖²)`` (Cauchy–Schwarz), or non-finite."""
        scale = self.sum_sq / self.count
        found = []
        for index, (_, s_pos, _, s_neg) in enumerate(spectra):
            for sign, values, row in (("+", s_pos, 1), ("-", s_neg, 2)):
                bound = float((scale[0, index] * scale[row, index]).sqrt())
                top = float(values[0])
                if not top > DEGENERATE_TOLERANCE * bound:  # also NaN
                    found.append((index, sign))
        return found

    def neutral_means(self) -> torch.Tensor:
        """``(L, d)`` float64: the neutral activations' mean per layer (feature space)."""
        self._require_data()
        return self.sum_neutral / self.count

    def covariances(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Ω+, Ω-)``, each ``(L, d, d)`` float64 (centred if the statistics are)."""
        pairs = [self._covariance(index) for index in range(len(self.layers))]
        return torch.stack([p for p, _ in pairs]), torch.stack([n for _, n in pairs])

    def _covariance(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Ω+, Ω-)`` of layer ``index``, each ``(d, d)`` float64: one layer at a time,
        so the dense SVDs need ``2 d²`` values beside the sums, not ``2 L d²``."""
        self._require_data()
        n = self.count
        cross_pos, cross_neg = self._cross_sums()
        omega_pos, omega_neg = cross_pos[index] / n, cross_neg[index] / n
        if self.centered:
            mean = self.sum_neutral[index] / n
            omega_pos -= torch.outer(mean, self.sum_pos[index] / n)
            omega_neg -= torch.outer(mean, self.sum_neg[index] / n)
        return omega_pos, omega_neg

    def signatures(self) -> torch.Tensor:
        """Per-layer signature ``(L,)``: nuclear norm of ``A = X Z^T / 2N`` (method.md)."""
        return signature_from_sums(self.sum_pos, self.sum_neg, self.count)

    def clipped_shares(self) -> list[float]:
        """Per layer, the share of neutral coordinates (of ``N d``) whose float32
        feature-map round trip is lossy; all 0 for ``linear``."""
        self._require_data()
        return (self.clipped_count.double() / (self.count * self.hidden_size)).tolist()

    @property
    def svd_route(self) -> SvdRoute:
        """The route :meth:`spectra` takes now: ``thin`` while activations are kept (and
        ``svd`` allows: sharded statistics keep them under ``dense`` too)."""
        thin = self.svd is SvdRoute.THIN or (
            self.svd is SvdRoute.AUTO and self.count < self.hidden_size
        )
        return SvdRoute.THIN if self._samples is not None and thin else SvdRoute.DENSE

    def spectra(self, route: SvdRoute | str | None = None) -> list[Spectrum]:
        """Per layer ``(U+, s+, U-, s-)``: left singular vectors ``(d, m)`` and descending
        singular values ``(m,)`` of Ω+ and Ω-, with ``m = d`` on the dense route and
        ``m = min(N, d)`` on the thin one (the other singular values are zero); computed
        once per route until the next ``update``. ``route``: default :attr:`svd_route`.
        They hold ``2 L d m`` float64 values: :meth:`layer_spectra` yields them one
        layer at a time instead."""
        chosen = self._route(route)
        if chosen not in self._spectra:
            self._spectra[chosen] = list(self.layer_spectra(chosen))
        return self._spectra[chosen]

    def layer_spectra(self, route: SvdRoute | str | None = None) -> Iterator[Spectrum]:
        """The spectra of :meth:`spectra`, computed (or read from its cache) one layer at
        a time, so that a caller keeping a few directions per layer holds one layer's."""
        chosen = self._route(route)
        if chosen in self._spectra:
            yield from self._spectra[chosen]
            return
        for index in range(len(self.layers)):
            yield (
                self._thin_spectrum(index)
                if chosen is SvdRoute.THIN
                else self._dense_spectrum(index)
            )

    def _route(self, route: SvdRoute | str | None) -> SvdRoute:
        chosen = self.svd_route if route is None else SvdRoute.parse(route, "route")
        if chosen is SvdRoute.AUTO:
            chosen = self.svd_route
        if chosen is SvdRoute.THIN and self._samples is None:
            raise ValueError("the thin SVD route needs the activations, which were not kept")
        self._require_data()
        return chosen

    def _dense_spectrum(self, index: int) -> Spectrum:
        omega_pos, omega_neg = self._covariance(index)
        u_pos, s_pos, _ = torch.linalg.svd(omega_pos)
        u_neg, s_neg, _ = torch.linalg.svd(omega_neg)
        return u_pos, s_pos, u_neg, s_neg

    def _thin_spectrum(self, index: int) -> Spectrum:
        n = self.count
        # this layer's rows of every kept batch: (N, d) per set, no copy of all layers
        rows = self._layer_rows(index)
        x, yp, yn = rows[:, 0], rows[:, 1], rows[:, 2]
        if self.centered:
            # centring x alone centres the product: (x - 1 x̄)ᵀ 1 = 0, so
            # (x - 1 x̄)ᵀ (y - 1 ȳ) = (x - 1 x̄)ᵀ y
            x = x - x.mean(0)
        q, r = torch.linalg.qr(x.T)  # (d, m), (m, N)
        w_pos, s_pos, _ = torch.linalg.svd(r @ yp / n, full_matrices=False)  # (m, m), (m,)
        w_neg, s_neg, _ = torch.linalg.svd(r @ yn / n, full_matrices=False)
        return q @ w_pos, s_pos, q @ w_neg, s_neg
