"""What the metrics share: the first-maximum arg-max, checks of scores and 0/1 labels,
and percentages that are ``None`` over an empty group."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["argmax_first", "check_labels", "check_scores", "percent"]


def argmax_first(values: Sequence[float]) -> int:
    """Index of the largest value; the first one wins a tie (like ``numpy.argmax``)."""
    best = 0
    for i in range(1, len(values)):
        if values[i] > values[best]:
            best = i
    return best


def check_scores(name: str, values: Sequence[float]) -> list[float]:
    """``values`` as floats; refuses an empty list and NaN (the message names ``name[i]``)."""
    out = [float(v) for v in values]
    if not out:
        raise ValueError(f"{name}: empty list of scores")
    for i, v in enumerate(out):
        if math.isnan(v):
            raise ValueError(f"{name}[{i}] is NaN")
    return out


def check_labels(name: str, labels: Sequence[int], n: int) -> list[int]:
    """``labels`` as ints; refuses a length other than ``n`` and values other than 0/1."""
    out = [int(v) for v in labels]
    if len(out) != n:
        raise ValueError(f"{name}: {len(out)} labels for {n} scores")
    for i, v in enumerate(out):
        if v not in (0, 1):
            raise ValueError(f"{name}[{i}] = {v}; labels must be 0 or 1")
    return out


def percent(num: int | float, den: int) -> float | None:
    """``100 * num / den``, or None when ``den`` is 0."""
    return None if den == 0 else 100.0 * num / den
