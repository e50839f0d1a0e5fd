"""The settings of the methods' grids in ``sea compare``: one frozen dataclass per kind.

A setting's fields, in declaration order, are its identity: :func:`setting_id` writes them
as ``name=value`` pairs (``layers=last-4,ratio=0.99``), which name the stored units and
appear in the reports, and :func:`setting_fields` gives them as the dictionary stored
with each unit. Both stay byte-identical to the earlier ``{"layers": ..., "ratio": ...}``
settings, so stored comparisons resume. A registry of other methods may also use plain
mappings as settings; the two functions accept them.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..core.options import Feature, SeaOptions

S = TypeVar("S")


@dataclass(frozen=True)
class NoSetting:
    """The one setting of a method that is not tuned (``default``)."""


@dataclass(frozen=True)
class SeaSetting:
    """Linear SEA on ``layers`` (``last-L``, or ``top-signature-L``: the L layers of highest
    signature), both energy ratios ``ratio``, centred."""

    layers: str
    ratio: float

    def options(self) -> SeaOptions:
        return SeaOptions(
            layers=self.layers, pos_ratio=self.ratio, neg_ratio=self.ratio, centered=True
        )


@dataclass(frozen=True)
class PhiSeaSetting:
    """Φ-SEA with ``feature`` on ``layers``, centred, ratio 0.99."""

    layers: str
    feature: Feature

    def options(self) -> SeaOptions:
        return SeaOptions(layers=self.layers, centered=True, feature=self.feature)


@dataclass(frozen=True)
class SteeringSetting:
    """A vector method (mean difference, PCA vector, LEACE) on ``layers`` at strength
    ``alpha``."""

    layers: str
    alpha: float


@dataclass(frozen=True)
class ITISetting:
    """ITI on the ``top_k`` best-probing heads, shifted by ``alpha`` standard deviations."""

    top_k: int
    alpha: float


@dataclass(frozen=True)
class LoRASetting:
    """The trained LoRA delta scaled by ``alpha``."""

    alpha: float


@dataclass(frozen=True)
class DoLaSetting:
    """DoLa with the ``premature`` layer bucket and plausibility threshold ``relative_top``."""

    premature: str
    relative_top: float


@dataclass(frozen=True)
class ContrastSetting:
    """ICD or CD: contrast strength ``beta`` (β) and plausibility threshold
    ``plausibility`` (λ; 0 = no constraint)."""

    beta: float
    plausibility: float


def setting_fields(setting: Any) -> dict[str, Any]:
    """The named values of a setting (a dataclass above, or a mapping), in order."""
    if isinstance(setting, Mapping):
        return dict(setting)
    if dataclasses.is_dataclass(setting) and not isinstance(setting, type):
        return {f.name: getattr(setting, f.name) for f in dataclasses.fields(setting)}
    raise TypeError(f"a setting is a dataclass or a mapping, not {type(setting).__name__}")


def setting_id(setting: Any) -> str:
    """A short, stable, file-name-safe name of a setting (``layers=last-4,ratio=0.99``;
    ``default`` for one without fields)."""
    fields = setting_fields(setting)
    if not fields:
        return "default"
    return ",".join(f"{k}={v}" for k, v in fields.items())


def grid(kind: type[S], **axes: Sequence[Any]) -> tuple[S, ...]:
    """``kind(**values)`` for the Cartesian product of the named axes, in order (first
    axis slowest); the axes are named as ``kind``'s fields, in the same order."""
    names = list(axes)
    return tuple(
        kind(**dict(zip(names, values, strict=True)))
        for values in itertools.product(*axes.values())
    )
