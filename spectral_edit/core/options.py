"""Typed options: the choices every layer of the library shares, and the options of a SEA fit.

Each choice is a :class:`~enum.StrEnum`, so a member equals its string (``Site.RESIDUAL ==
"residual"``), is written to JSON as that string, and lists the valid values when parsing
fails. The CLI uses the same enums as its choices.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, Self


class Choice(StrEnum):
    """Base of the option enums: :meth:`parse` with an error that lists the valid values."""

    @classmethod
    def values(cls) -> tuple[str, ...]:
        """The valid values, in declaration order."""
        return tuple(member.value for member in cls)

    @classmethod
    def parse(cls, value: str, name: str | None = None) -> Self:
        """``value`` as a member (members pass through).

        Raises:
            ValueError: ``"<name> must be one of (...), not 'value'"``.
        """
        try:
            return cls(value)
        except ValueError:
            label = name or cls.__name__.lower()
            raise ValueError(f"{label} must be one of {cls.values()}, not {value!r}") from None


class Site(Choice):
    """Where activations are read and edited: a decoder layer's output or its MLP's."""

    RESIDUAL = "residual"
    MLP = "mlp"


class Merge(Choice):
    """How ``P+h`` and ``P-h`` are merged: rescaled to ``‖h‖`` per token, or averaged."""

    NORM = "norm"
    MEAN = "mean"


class Positions(Choice):
    """Which positions of a sequence an edit acts on.

    ``all``: every position (the paper). ``answer``: the prompt's last position and every
    later one (every position whose next-token prediction belongs to the answer).
    ``generated``: only positions after the prompt (the tokens of the answer itself).
    The prompt is what the scorer scores continuations after, or what generation starts
    from (:func:`spectral_edit.hf.positions.prompt_boundary`).
    """

    ALL = "all"
    ANSWER = "answer"
    GENERATED = "generated"


class Feature(Choice):
    """The Φ-SEA feature map (``linear`` = plain SEA)."""

    LINEAR = "linear"
    TANH = "tanh"
    ELU = "elu"
    SQUARED_EXPONENTIAL = "squared-exponential"

    @classmethod
    def _missing_(cls, value: object) -> Feature | None:
        # case-insensitive, "_" read as "-" (so squared_exponential works on a command line)
        if isinstance(value, str):
            canonical = value.strip().lower().replace("_", "-")
            for member in cls:
                if member.value == canonical:
                    return member
        return None


class Neutral(Choice):
    """The neutral answer of a demonstration: the model's greedy answer, the prompt's last
    token, or the ``neutral`` field of the file."""

    GENERATE = "generate"
    PROMPT = "prompt"
    GIVEN = "given"


class Token(Choice):
    """Which activation of an answer is used: its last token, the mean over its tokens, or
    one of its tokens drawn at random (seeded: the same text and seed always give the
    same token, whatever the batch or the order)."""

    LAST = "last"
    MEAN = "mean"
    RANDOM = "random"


class SvdRoute(Choice):
    """``dense``: SVD of the ``(d, d)`` cross-covariances; ``thin``: SVD of ``N``-dimensional
    factors of the kept activations; ``auto``: thin while fewer than ``d`` demonstrations."""

    AUTO = "auto"
    DENSE = "dense"
    THIN = "thin"


MAX_ALPHA = 1e6
"""The largest strength ``|α|`` any editor accepts. Useful strengths are of order 1 to
100 (SEA's α = 1 is the full edit; the baselines' tuning intervals end near 40); a larger
α only scales ``h' − h`` past what float32 (let alone float16) activations can hold, so
the edited model produces NaN and Inf instead of text."""


def check_alpha(value: object, name: str = "alpha") -> float:
    """``value`` as a float strength, or ``ValueError`` (``"alpha must be ..."``, so the
    CLI can name its option) unless it is a finite number with ``|α| <= MAX_ALPHA``."""
    try:
        alpha = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(alpha) or abs(alpha) > MAX_ALPHA:
        raise ValueError(
            f"{name} must be a finite number with |{name}| <= {MAX_ALPHA:g} (larger strengths "
            f"overflow the edited activations), got {value!r}"
        )
    return alpha


def check_ratio(name: str, value: float) -> float:
    """``value`` as a float energy ratio in ``(0, 1]``, or ``ValueError`` naming ``name``
    (NaN is refused too)."""
    try:
        ratio = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}") from None
    if not (0.0 < ratio <= 1.0):  # also refuses NaN
        raise ValueError(
            f"{name} must be in (0, 1] (the share of the cross-covariance's energy the "
            f"kept directions explain, e.g. 0.99), got {value!r}"
        )
    return ratio


def check_rank(name: str, value: int | None) -> int | None:
    """``None`` (ranks from the energy ratio) or ``value`` as an int ``>= 1``; otherwise
    ``ValueError`` naming ``name`` (``2.5``, ``True`` and ``0`` are refused)."""
    if value is None:
        return None
    try:
        whole = isinstance(value, bool) or int(value) != value
    except (TypeError, ValueError, OverflowError):
        whole = True
    if whole or value < 1:
        raise ValueError(
            f"{name} must be an integer >= 1 (or None for the energy ratio), got {value!r}"
        )
    return int(value)


def check_count(name: str, value: int, *, least: int = 1) -> int:
    """``value`` if it is a whole number ``>= least`` (a count: items, demonstrations,
    tokens, a batch size); else ``ValueError`` naming ``name``. Booleans and floats are
    refused: ``-1`` or ``0`` never means "all" (a limit of all items is ``None``, see
    :func:`check_limit`)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    return value


def check_limit(name: str, value: int | None) -> int | None:
    """A limit on how many items are used: ``None`` (all of them) or a count ``>= 1``
    (:func:`check_count`)."""
    return None if value is None else check_count(name, value)


@dataclasses.dataclass(frozen=True)
class SeaOptions:
    """Every option of a SEA (or Φ-SEA) fit from a model, in one frozen value.

    Capture: ``layers`` (``"last-L"``, ``"all"``, ``"10,11"`` or indices), ``site``,
    ``neutral``, ``token`` (with ``token_seed``, used by ``random``), ``layer_path``
    (module path of the decoder layers, when they are not found automatically). Fit:
    energy ratios ``pos_ratio``/``neg_ratio`` in ``(0, 1]`` unless ``pos_rank``/``neg_rank``
    fix ``k±``; ``centered``; ``feature`` with optional per-layer ``feature_scales``
    (default: each layer's neutral RMS); ``svd``.
    Edit: ``merge``, strength ``alpha`` (0 = no edit; finite, ``|α| <= MAX_ALPHA``),
    ``center_edit`` (project ``h − μ`` and add ``μ`` back, μ the fit-time neutral mean)
    and ``positions``.
    """

    layers: str | tuple[int, ...] = "last-8"
    site: Site = Site.RESIDUAL
    neutral: Neutral = Neutral.GENERATE
    token: Token = Token.LAST
    token_seed: int = 0
    pos_ratio: float = 0.99
    neg_ratio: float = 0.99
    pos_rank: int | None = None
    neg_rank: int | None = None
    centered: bool = False
    feature: Feature = Feature.LINEAR
    feature_scales: tuple[float, ...] | None = None
    merge: Merge = Merge.NORM
    alpha: float = 1.0
    svd: SvdRoute = SvdRoute.AUTO
    layer_path: str | None = None
    center_edit: bool = False
    positions: Positions = Positions.ALL

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not isinstance(self.layers, str):
            set_(self, "layers", tuple(int(i) for i in self.layers))
        set_(self, "site", Site.parse(self.site, "site"))
        set_(self, "neutral", Neutral.parse(self.neutral, "neutral"))
        set_(self, "token", Token.parse(self.token, "token"))
        set_(self, "token_seed", check_count("token_seed", self.token_seed, least=0))
        set_(self, "feature", Feature.parse(self.feature, "feature"))
        set_(self, "merge", Merge.parse(self.merge, "merge"))
        set_(self, "svd", SvdRoute.parse(self.svd, "svd"))
        set_(self, "positions", Positions.parse(self.positions, "positions"))
        set_(self, "center_edit", bool(self.center_edit))
        set_(self, "pos_ratio", check_ratio("pos_ratio", self.pos_ratio))
        set_(self, "neg_ratio", check_ratio("neg_ratio", self.neg_ratio))
        set_(self, "pos_rank", check_rank("pos_rank", self.pos_rank))
        set_(self, "neg_rank", check_rank("neg_rank", self.neg_rank))
        set_(self, "alpha", check_alpha(self.alpha))
        if self.feature_scales is not None:
            scales = tuple(float(s) for s in self.feature_scales)
            if not all(math.isfinite(s) and s > 0 for s in scales):
                raise ValueError(f"feature_scales must be finite and > 0, got {scales}")
            set_(self, "feature_scales", scales)

    def replace(self, **changes: Any) -> SeaOptions:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The options as JSON-able values (enums as strings, tuples as lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SeaOptions:
        """Inverse of :meth:`to_json` (unknown keys are refused)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SEA options {unknown}; known: {sorted(known)}")
        values = dict(data)
        for key in ("layers", "feature_scales"):
            if isinstance(values.get(key), Sequence) and not isinstance(values[key], str):
                values[key] = tuple(values[key])
        return cls(**values)

    def fit_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~spectral_edit.editors.sea_fit.fit_from_arrays`
        these options set (everything but the capture options)."""
        return {
            "pos_ratio": self.pos_ratio,
            "neg_ratio": self.neg_ratio,
            "pos_rank": self.pos_rank,
            "neg_rank": self.neg_rank,
            "centered": self.centered,
            "feature": self.feature,
            "feature_scales": self.feature_scales,
            "merge": self.merge,
            "alpha": self.alpha,
            "svd": self.svd,
            "site": self.site,
            "layer_path": self.layer_path,
            "center_edit": self.center_edit,
            "positions": self.positions,
        }
