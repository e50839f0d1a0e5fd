"""Streaming fitter: the core statistics per layer → :class:`SpectralEditor`.

:class:`SpectralFitter` is :class:`~spectral_edit.core.statistics.SpectralStatistics`
(float64 sums, the dense and thin SVD routes, the Φ-SEA clipping counts) plus the model's
layer count and :meth:`~SpectralFitter.fit`, which keeps for each layer the top ``k+`` /
``k-`` left singular vectors of Ω± as the editor's ``(d, k)`` factors. Sums add, so any
split of the data into batches (or processes) gives the same editor up to round-off, and
the thin route gives the same subspaces (hence the same editor) as the dense one.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..core.distributed import all_gather_objects, all_reduce_sum, world
from ..core.features import get_feature_map, rms_scale
from ..core.options import Feature, Merge, Positions, Site, SvdRoute, check_ratio
from ..core.spectral import choose_rank, energy_fractions, energy_shares, subspaces_coincide
from ..core.statistics import (
    ArrayLike,
    FitError,
    SpectralStatistics,
    Spectrum,
    as_activations,
    check_feature_scales,
    check_layer_ids,
    check_ranks,
    signature_from_sums,
)
from .sea import SpectralEditor

SPECTRUM_DIRECTIONS = 64
"""How many directions of each layer's Ω± spectrum the editor's ``layer_stats`` keep
(``pos_energy_shares`` / ``neg_energy_shares``: each direction's share of the energy,
descending; fewer where the spectrum has fewer directions), for ``sea inspect``."""

_TODO = (
    "use more, and more varied, demonstrations (SEA needs N well above the ranks kept; "
    "check the file for duplicate lines), lower pos_ratio/neg_ratio (sea fit --pos-ratio/"
    "--neg-ratio) or fix smaller ranks (--pos-rank/--neg-rank)"
)


class SpectralFitter(SpectralStatistics):
    """Accumulates the statistics of SEA for ``layers`` of a model with hidden size ``d``
    and fits a :class:`SpectralEditor` from them.

    Args:
        layers: the L model-layer indices the activations belong to (in array order).
        hidden_size: ``d``.
        num_layers: the model's decoder layer count (stored in the editor for checks).
        centered, feature, feature_scales, device, svd, sharded: as for
            :class:`~spectral_edit.core.statistics.SpectralStatistics` (``feature_scales``
            is required for non-linear maps; ``fit_from_arrays`` defaults it to each
            layer's neutral RMS).
    """

    def __init__(
        self,
        layers: Sequence[int],
        hidden_size: int,
        num_layers: int,
        *,
        centered: bool = False,
        feature: Feature | str = Feature.LINEAR,
        feature_scales: Sequence[float] | None = None,
        device: torch.device | str = "cpu",
        svd: SvdRoute | str = SvdRoute.AUTO,
        sharded: bool = False,
    ) -> None:
        super().__init__(
            layers,
            hidden_size,
            centered=centered,
            feature=feature,
            feature_scales=feature_scales,
            device=device,
            svd=svd,
            sharded=sharded,
        )
        self.num_layers = int(num_layers)
        # while fitting one block of sharded statistics: the checks over every layer,
        # deferred until the blocks are gathered (see _fit_blocks)
        self._deferred: dict[str, Any] | None = None

    def fit(
        self,
        *,
        pos_ratio: float = 0.99,
        neg_ratio: float = 0.99,
        pos_rank: int | None = None,
        neg_rank: int | None = None,
        edit_layers: Sequence[int] | None = None,
        site: Site | str = Site.RESIDUAL,
        merge: Merge | str = Merge.NORM,
        alpha: float = 1.0,
        layer_path: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        center_edit: bool = False,
        positions: Positions | str = Positions.ALL,
    ) -> SpectralEditor:
        """SVD each layer's Ω± and keep the top ``k+`` / ``k-`` left singular vectors.

        Ranks come from energy ratios unless ``pos_rank``/``neg_rank`` fix them.
        ``metadata["layer_stats"]`` records per layer the ranks, the energy of the top
        direction and of the kept ones, the energy share of each of the top
        :data:`SPECTRUM_DIRECTIONS` directions, the signature and (Φ-SEA) the clipped share.
        The neutral mean per layer (feature space) is stored for the centred edit
        (``center_edit``); ``positions`` chooses the positions edited.

        The editor returned has finite factors and edits at least one layer. Degenerate
        demonstrations are refused, naming the layers, the cause and what to do; a
        layer whose edit is the identity, or whose kept ranks reach every direction the
        demonstrations span, is warned about (:class:`UserWarning`).

        Raises:
            FitError: a bad ratio or rank; no demonstrations; positive and negative
                activations identical at every layer; a zero cross-covariance at some
                layer (e.g. 1 demonstration centred, all-duplicate demonstrations
                centred, all-zero activations); an edit that is the identity at every
                layer (e.g. N = 1 or 2, or too few demonstrations for the ratio).

        Statistics sharded by layer over K > 1 ranks (:meth:`shard_layers`): a collective
        (every rank must call it, with the same options); each rank fits its block of
        the layers, the blocks' factors are gathered, and every rank returns the editor
        of every layer, the one the unsharded statistics give (up to round-off); an
        error at one rank's layers is raised on every rank.
        """
        if self.shard is not None and self.shard.size > 1 and self._deferred is None:
            return self._fit_blocks({k: v for k, v in locals().items() if k != "self"})
        merge = Merge.parse(merge, "merge")
        pos_ratio = self._checked_ratio("pos_ratio", pos_ratio)
        neg_ratio = self._checked_ratio("neg_ratio", neg_ratio)
        ranks = check_ranks(self.hidden_size, pos_rank=pos_rank, neg_rank=neg_rank)
        pos_rank, neg_rank = ranks["pos_rank"], ranks["neg_rank"]
        self._require_data()
        route = self.svd_route
        if route is SvdRoute.THIN and max(pos_rank or 0, neg_rank or 0) > min(
            self.count, self.hidden_size
        ):
            route = SvdRoute.DENSE  # ranks beyond N: null-space directions, from the d × d SVD
        spectra = [
            _keep_needed(spectrum, (pos_ratio, pos_rank), (neg_ratio, neg_rank))
            for spectrum in self.layer_spectra(route)
        ]
        self._check_nonzero(spectra)
        self._check_contrast()
        pos_factors, neg_factors, stats, identity = [], [], [], []
        for layer, (u_pos, s_pos, u_neg, s_neg) in zip(self.layers, spectra, strict=True):
            k_pos = choose_rank(s_pos, pos_ratio, pos_rank, "pos_rank")
            k_neg = choose_rank(s_neg, neg_ratio, neg_rank, "neg_rank")
            if subspaces_coincide(u_pos[:, :k_pos], u_neg[:, :k_neg]):
                identity.append(layer)
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
                    "pos_energy_shares": energy_shares(s_pos)[:SPECTRUM_DIRECTIONS].tolist(),
                    "neg_energy_shares": energy_shares(s_neg)[:SPECTRUM_DIRECTIONS].tolist(),
                }
            )
        clipped = self.clipped_shares()
        for entry, value, share in zip(stats, self.signatures().tolist(), clipped, strict=True):
            entry["signature"] = value
            if self.feature_scales is not None:
                entry["clipped_share"] = share
        self._warn_clipped(clipped)
        self._check_identity(identity, stats)
        self._warn_saturated(stats)
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
            site=Site.parse(site, "site"),
            merge=merge,
            alpha=alpha,
            feature=self.feature.name,
            feature_scales=self.feature_scales,
            edit_layers=None if edit_layers is None else tuple(sorted(set(edit_layers))),
            layer_path=layer_path,
            metadata=info,
            means=tuple(m.float().cpu().contiguous() for m in self.neutral_means()),
            center_edit=center_edit,
            positions=Positions.parse(positions, "positions"),
        )

    @staticmethod
    def _checked_ratio(name: str, ratio: float) -> float:
        """:func:`~spectral_edit.core.options.check_ratio` as a :class:`FitError`."""
        try:
            return check_ratio(name, ratio)
        except ValueError as error:
            raise FitError(str(error)) from None

    def _demonstrations(self) -> str:
        """``"N demonstration(s)"``, with ``" (centred)"`` for a centred fit."""
        plural = "" if self.count == 1 else "s"
        return f"{self.count} demonstration{plural}{' (centred)' if self.centered else ''}"

    def _fit_blocks(self, options: dict[str, Any]) -> SpectralEditor:
        """:meth:`fit` of sharded statistics: this rank's block of the layers fitted with
        the checks over every layer deferred, the blocks gathered from every rank (in
        rank order, hence layer order), those checks made on the whole, and the blocks'
        factors, means and ``layer_stats`` joined into one editor."""
        assert self.shard is not None
        edit_layers = options.pop("edit_layers")
        self._deferred = {"same": True, "identity": [], "duplicates": False}
        block: SpectralEditor | None = None
        failure: BaseException | None = None
        try:
            if self.layers:
                block = self.fit(**options)
        except Exception as error:  # noqa: BLE001 - every rank must reach the gather below
            failure = error
        deferred, self._deferred = self._deferred, None
        message = None if failure is None else str(failure)
        fitted = isinstance(failure, FitError)
        gathered = all_gather_objects((block, deferred, message, fitted))
        if failure is not None and not fitted:
            raise failure
        errors = [(rank, m, f) for rank, (_, _, m, f) in enumerate(gathered) if m is not None]
        if any(not f for _, _, f in errors):
            rank, text, _ = next(e for e in errors if not e[2])
            raise RuntimeError(f"the sharded fit failed on rank {rank}: {text}")
        if errors:
            raise FitError("; ".join(text for _, text, _ in errors))
        blocks = [b for b, _, _, _ in gathered if b is not None]
        if all(d["same"] for _, d, _, _ in gathered):
            raise self._no_contrast(self.shard.layers)
        identity = [layer for _, d, _, _ in gathered for layer in d["identity"]]
        stats = [entry for b in blocks for entry in b.metadata["layer_stats"]]
        self._check_identity(
            identity,
            stats,
            fitted=len(self.shard.layers),
            duplicates=any(d["duplicates"] for _, d, _, _ in gathered),
        )
        return dataclasses.replace(
            blocks[0],
            layers=self.shard.layers,
            pos_factors=tuple(f for b in blocks for f in b.pos_factors),
            neg_factors=tuple(f for b in blocks for f in b.neg_factors),
            means=tuple(m for b in blocks for m in b.means or ()),
            feature_scales=self.shard.feature_scales,
            edit_layers=None if edit_layers is None else tuple(sorted(set(edit_layers))),
            metadata={**blocks[0].metadata, "layer_stats": stats},
        )

    def _no_contrast(self, layers: Sequence[int]) -> FitError:
        """The error of demonstrations without contrast at every one of ``layers``."""
        return FitError(
            f"the positive and negative activations are identical at every fitted layer "
            f"{tuple(layers)} over the {self.count} demonstrations (are each "
            "demonstration's positive and negative answers the same?), so there is no "
            "contrast to edit along; give demonstrations whose positive and negative "
            "answers differ"
        )

    def _check_contrast(self) -> None:
        """:class:`FitError` if the positive and negative activations agree at every layer
        (same sums and cross sums): the demonstrations carry no contrast to edit along
        (one block of sharded statistics: recorded for :meth:`_fit_blocks`)."""
        same = (
            not self._sides_differ()
            and torch.equal(self.sum_pos, self.sum_neg)
            and torch.equal(self.sum_sq[1], self.sum_sq[2])
        )
        if self._deferred is not None:
            self._deferred["same"] = same
            return
        if same:
            raise FitError(
                f"the positive and negative activations are identical at every fitted layer "
                f"{self.layers} over the {self.count} demonstrations (are each "
                "demonstration's positive and negative answers the same?), so there is no "
                "contrast to edit along; give demonstrations whose positive and negative "
                "answers differ"
            )

    def _check_nonzero(self, spectra: Sequence[Spectrum]) -> None:
        """:class:`FitError` naming each layer whose Ω+ or Ω- is zero, with the cause
        (:meth:`zero_cause`) and what to do."""
        zero = self.zero_layers(spectra)
        if not zero:
            return
        causes: dict[str, list[str]] = {}
        for index, sign in zero:
            causes.setdefault(self.zero_cause(index, sign), []).append(
                f"{self.layers[index]} (Ω{sign})"
            )
        text = "; ".join(f"at layer {', '.join(where)}: {cause}" for cause, where in causes.items())
        raise FitError(f"cannot fit SEA: a cross-covariance is zero {text}")

    def _check_identity(
        self,
        identity: Sequence[int],
        stats: Sequence[Mapping[str, Any]],
        *,
        fitted: int | None = None,
        duplicates: bool | None = None,
    ) -> None:
        """:class:`FitError` if the edit is the identity at every layer (``identity``: the
        layers whose kept positive and negative subspaces coincide); a warning if at some.
        ``fitted``: the count of fitted layers (default :attr:`layers`'); ``duplicates``:
        whether the neutral activations are constant at some layer (default: found here).
        One block of sharded statistics: recorded for :meth:`_fit_blocks` instead."""
        if duplicates is None:
            duplicates = any("neutral" in sets for sets in self.constant_sets())
        if self._deferred is not None:
            self._deferred["identity"] = list(identity)
            self._deferred["duplicates"] = duplicates
            return
        if not identity:
            return
        ranks = ", ".join(
            f"{e['layer']}: k+ = k- = {e['pos_rank']}" for e in stats if e["layer"] in identity
        )
        hint = (
            f"; the {self.count} neutral activations are identical (duplicate demonstrations?)"
            if duplicates and self.count > 1
            else ""
        )
        why = (
            f"the kept positive and negative subspaces coincide ({ranks}), so P+h + P-h = h. "
            f"With {self._demonstrations()} the ratios keep every direction they span{hint}"
        )
        if len(identity) == (len(self.layers) if fitted is None else fitted):
            raise FitError(f"the edit would do nothing at every fitted layer: {why}; {_TODO}")
        warnings.warn(
            f"the edit does nothing at layer(s) {', '.join(map(str, identity))}: {why}. The "
            f"other layers are edited; to edit these too, {_TODO}",
            stacklevel=3,
        )

    def _warn_saturated(self, stats: Sequence[Mapping[str, Any]]) -> None:
        """Warn where a kept rank reaches ``b = min(N, d)`` (``N − 1`` centred), every
        direction the demonstrations span: the subspace is then the demonstrations' span
        (beyond ``b``, arbitrary null-space directions), not a measured direction."""
        bound = min(self.count - int(self.centered), self.hidden_size)
        if bound >= self.hidden_size:
            return
        full = [e for e in stats if max(e["pos_rank"], e["neg_rank"]) >= bound]
        if not full:
            return
        where = ", ".join(f"{e['layer']} ({e['pos_rank']}, {e['neg_rank']})" for e in full)
        warnings.warn(
            f"the kept ranks (k+, k-) at layer(s) {where} reach {bound}, every direction "
            f"{self._demonstrations()} span; "
            f"directions beyond it are arbitrary. To measure directions, {_TODO}",
            stacklevel=3,
        )

    def _warn_clipped(self, clipped: Sequence[float]) -> None:
        """Warn if the feature map's float32 round trip is lossy for some neutral
        coordinates (``clipped``: the share per layer, see :meth:`clipped_shares`)."""
        if self.feature_scales is None or not any(share > 0 for share in clipped):
            return
        worst = max(range(len(clipped)), key=clipped.__getitem__)
        warnings.warn(
            f"feature map {str(self.feature.name)!r}: {clipped[worst]:.3%} of the neutral "
            f"activation coordinates of layer {self.layers[worst]} (scale "
            f"{self.feature_scales[worst]:.4g}) lie where the float32 round trip "
            "φ⁻¹(φ(h)) is lossy, so every edited token changes there whatever the "
            "projections; pass larger feature_scales (sea fit --feature-scales) or use "
            "elu or linear. Per-layer shares: the editor's layer_stats 'clipped_share'.",
            stacklevel=3,
        )


def _keep_needed(
    spectrum: Spectrum, pos: tuple[float, int | None], neg: tuple[float, int | None]
) -> Spectrum:
    """A layer's spectrum with only the directions the fit can keep: the ``k±`` that
    :func:`choose_rank` gives for the ratio (or fixed rank); all of them where it cannot
    tell (a degenerate layer, refused after with its cause)."""
    u_pos, s_pos, u_neg, s_neg = spectrum
    try:
        k_pos = choose_rank(s_pos, pos[0], pos[1], "pos_rank")
        k_neg = choose_rank(s_neg, neg[0], neg[1], "neg_rank")
    except (ValueError, ZeroDivisionError):
        return spectrum
    return u_pos[:, :k_pos].clone(), s_pos, u_neg[:, :k_neg].clone(), s_neg


def default_feature_scales(neutral: ArrayLike, *, distributed: bool = False) -> list[float]:
    """Per-layer RMS of neutral activations ``(N, L, d)``: the default Φ-SEA scales;
    ``distributed``: of every rank's rows together (sums all-reduced)."""
    tensor = as_activations(neutral, "neutral")
    if not distributed or world()[1] == 1:
        return [rms_scale(tensor[:, index]) for index in range(tensor.shape[1])]
    squares = tensor.to(torch.float64).square().sum((0, 2))  # (L,)
    elements = torch.tensor([float(tensor.shape[0] * tensor.shape[2])], dtype=torch.float64)
    all_reduce_sum(squares)
    all_reduce_sum(elements)
    # rms_scale of the one-element RMS is that RMS, checked finite and positive
    return [rms_scale((sq / elements).sqrt()) for sq in squares]


def layer_signatures(
    positive: ArrayLike,
    negative: ArrayLike,
    *,
    feature: Feature | str = Feature.LINEAR,
    feature_scales: Sequence[float] | None = None,
    distributed: bool = False,
) -> torch.Tensor:
    """The signature ``(L,)`` float64 of every layer of ``(N, L, d)`` positive and negative
    activations, in the fit's feature space (``feature_scales``: one per layer, required
    for a non-linear map): what the fitted editor's ``layer_stats`` record for the layers it
    keeps (:meth:`SpectralStatistics.signatures`), from the sums alone. ``distributed``: of
    every rank's rows (sums all-reduced; every rank must call it).

    Raises:
        FitError: misshapen activations, no rows, or missing scales for a non-linear map.
    """
    pos, neg = as_activations(positive, "positive"), as_activations(negative, "negative")
    if pos.shape != neg.shape:
        raise FitError(f"positive {tuple(pos.shape)} and negative {tuple(neg.shape)} differ")
    feature_map = get_feature_map(feature)
    scales = None
    if not feature_map.is_identity:
        check_feature_scales(str(feature_map.name), feature_scales, range(pos.shape[1]))
        scales = torch.tensor(list(feature_scales or ()), dtype=torch.float64)[None, :, None]
    sums = [
        (x.double() if scales is None else feature_map.forward(x.double(), scales)).sum(0)
        for x in (pos, neg)
    ]
    count = torch.tensor([float(pos.shape[0])], dtype=torch.float64)
    if distributed:
        for tensor in (*sums, count):
            all_reduce_sum(tensor)
    if int(count) == 0:
        raise FitError("no demonstrations: the activation arrays have N = 0 rows")
    return signature_from_sums(sums[0], sums[1], int(count))


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
    feature: Feature | str = Feature.LINEAR,
    feature_scales: Sequence[float] | None = None,
    batch_size: int | None = None,
    svd: SvdRoute | str = SvdRoute.AUTO,
    distributed: bool = False,
    shard_layers: bool = False,
    **fit_options: Any,
) -> SpectralEditor:
    """Fit an editor from activation arrays in one call.

    ``distributed``: this process holds one share of the rows; under an initialised
    default process group, the statistics (and default Φ-SEA scales) of every rank's
    share are reduced before the fit (:meth:`SpectralStatistics.all_reduce`), so every
    rank gets the editor of all rows (``n_demonstrations`` counts them all). Every rank
    must call it. ``shard_layers`` (with ``distributed``, K > 1 ranks): instead, each
    rank keeps and fits only its block of about L/K layers
    (:meth:`SpectralStatistics.shard_layers`: the ``d × d`` sums, or the thin route's
    gathered rows, of L/K layers per rank rather than L) and the fitted factors are
    gathered: every rank still gets the same editor (up to round-off). No effect in one
    process.

    Args:
        neutral, positive, negative: ``(N, L, d)`` arrays (torch or numpy), rows aligned.
        pos_ratio, neg_ratio: energy ratios in ``(0, 1]`` choosing ``k+`` and ``k-``.
        layers: the model layers the L slices belong to (default ``0..L-1``).
        num_layers: the model's layer count (default ``max(layers) + 1``).
        centered: centre each set before the cross-covariance.
        feature: ``linear``, ``tanh``, ``elu`` or ``squared-exponential`` (Φ-SEA).
        feature_scales: per-layer scales; default the neutral activations' RMS per layer.
        batch_size: stream the arrays in batches of this size (same result).
        svd: the :class:`~spectral_edit.core.options.SvdRoute` (the same editor either way).
        **fit_options: passed to :meth:`SpectralFitter.fit` (``pos_rank``, ``merge``, ...).

    Raises:
        FitError: no rows, misshapen or non-finite arrays (naming the set, the layers and
            the first demonstration), bad layer ids, ratios, ranks or scales, and the
            degenerate cases :meth:`SpectralFitter.fit` refuses.
        ValueError: an invalid editor option (e.g. ``alpha`` not finite).
    """
    h = as_activations(neutral, "neutral")
    if h.shape[0] == 0:
        raise FitError("no demonstrations: the activation arrays have N = 0 rows")
    layer_ids = list(range(h.shape[1])) if layers is None else [int(i) for i in layers]
    if len(layer_ids) != h.shape[1]:
        raise FitError(f"{len(layer_ids)} layer ids for arrays with {h.shape[1]} layers")
    check_layer_ids(layer_ids)
    if not get_feature_map(feature).is_identity and feature_scales is None:
        feature_scales = default_feature_scales(h, distributed=distributed)
    sharded = shard_layers and distributed and world()[1] > 1
    fitter = SpectralFitter(
        layer_ids,
        h.shape[2],
        num_layers if num_layers is not None else max(layer_ids) + 1,
        centered=centered,
        feature=feature,
        feature_scales=feature_scales,
        svd=svd,
        sharded=sharded,
    )
    step = batch_size or h.shape[0]
    pos = as_activations(positive, "positive")
    neg = as_activations(negative, "negative")
    for start in range(0, h.shape[0], step):
        fitter.update(h[start : start + step], pos[start : start + step], neg[start : start + step])
    if sharded:
        fitter.shard_layers()
    elif distributed:
        fitter.all_reduce()
    return fitter.fit(pos_ratio=pos_ratio, neg_ratio=neg_ratio, **fit_options)
