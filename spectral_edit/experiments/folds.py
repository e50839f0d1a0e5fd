"""The 2-fold protocol's pieces, shared by ``sea compare`` and the benchmark grids.

A setting is chosen on the questions of one TruthfulQA fold (the tuning fold) by
:func:`~spectral_edit.evaluate.metrics.multiple_choice.tuning_criterion` and reported on
the other fold, so no reported question was used to choose its own setting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ..evaluate.metrics.multiple_choice import tuning_criterion

T = TypeVar("T")


@dataclass(frozen=True)
class Direction:
    """Tune on fold ``tune``, report on fold ``test``."""

    tune: int
    test: int

    @property
    def label(self) -> str:
        """``"fold1->fold2"``: how reports name the direction."""
        return f"fold{self.tune}->fold{self.test}"

    @classmethod
    def parse(cls, text: str) -> Direction:
        """``"1-2"`` → ``Direction(1, 2)`` (folds 1 and 2, different)."""
        parts = text.strip().split("-")
        if len(parts) != 2 or not all(p.strip() in ("1", "2") for p in parts):
            raise ValueError(f"a direction is 'tune-test' with folds 1 and 2, not {text!r}")
        tune, test = (int(p) for p in parts)
        if tune == test:
            raise ValueError(f"a direction tunes and tests on different folds, not {text!r}")
        return cls(tune, test)


DIRECTIONS = (Direction(1, 2), Direction(2, 1))
"""Fold 1 → fold 2 always; the reverse on request."""


def best_on_fold(candidates: Sequence[T], summary: Callable[[T], Mapping[str, float]]) -> T:
    """The candidate whose tuning-fold ``summary`` (MC1/MC2 percent) maximises the tuning
    criterion; the first of equals (the candidates' order breaks ties)."""
    if not candidates:
        raise ValueError("no candidates to choose from")
    scores = [tuning_criterion(summary(c)) for c in candidates]
    return candidates[scores.index(max(scores))]
