"""What ``sea tune`` is run with and what it finds, as typed values: the options, the
unedited model's figures, each method's calibrations and its held-out figures."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ..data.control import DEFAULT_CONTROL_TASKS
from .calibrate import Budget, Calibration, ProbeRecord

__all__ = ["Baseline", "HeldOut", "MethodTune", "TuneOptions", "control_average"]

Summary = Mapping[str, Any]

CONTROL_HARM = "control_points"
KL_HARM = "kl_nats"


def control_average(summary: Summary) -> float | None:
    """The mean accuracy (percent) of a control summary's multiple-choice tasks."""
    value = summary["average"]["acc"]
    return None if value is None else float(value)


def control_loss(unedited: Summary, edited: Summary) -> float:
    """Control points lost: unedited minus edited average (NaN when either has none)."""
    before, after = control_average(unedited), control_average(edited)
    return math.nan if before is None or after is None else before - after


@dataclass(frozen=True)
class TuneOptions:
    """What a tuning run is run with. ``evaluations``: probes per method (split evenly
    over its configurations); ``alpha_ranges``: ``(method, lo, hi)`` overrides of the
    default α intervals (method ``*`` = every method); ``control_limit`` (n): control
    items ``[0, n)`` of each task tune, ``[n, 2n)`` report; ``kl_texts`` (m): neutral
    texts ``[0, m)`` tune, ``[m, 2m)`` report, each cut to ``kl_max_tokens`` tokens."""

    methods: tuple[str, ...]
    budget: Budget = field(default_factory=Budget)
    evaluations: int = 8
    alpha_ranges: tuple[tuple[str, float, float], ...] = ()
    control_tasks: tuple[str, ...] = DEFAULT_CONTROL_TASKS
    control_limit: int = 50
    kl_texts: int = 32
    kl_max_tokens: int = 128
    neutral: str = "generate"
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.evaluations, bool) or self.evaluations < 1:
            raise ValueError(f"evaluations must be a positive integer, got {self.evaluations!r}")
        for name, value in (("control_limit", self.control_limit), ("kl_texts", self.kl_texts)):
            if isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if "gsm8k" in self.control_tasks:
            raise ValueError("gsm8k is scored by generation and takes no offset: not a harm here")
        for method, lo, hi in self.alpha_ranges:
            if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
                raise ValueError(f"the α range of {method} needs 0 < lo < hi, got {lo}, {hi}")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["budget"] = self.budget.to_json()
        return data


@dataclass(frozen=True)
class Baseline:
    """The unedited model: the target on both parts, the control tasks on both parts."""

    tune_target: Summary
    report_target: Summary
    control_tune: Summary
    control_report: Summary

    def to_json(self) -> dict[str, Any]:
        return {
            "tune_target": dict(self.tune_target),
            "report_target": dict(self.report_target),
            "control_tune": dict(self.control_tune),
            "control_report": dict(self.control_report),
        }


@dataclass(frozen=True)
class HeldOut:
    """A chosen setting on the held-out part: the target's summary, the control tasks'
    summary and the KL summary (``kl_mean``, ``kl_p95``, ...)."""

    target: Summary
    control: Summary
    kl: Summary

    @property
    def control_average(self) -> float | None:
        return control_average(self.control)

    @property
    def control_tasks(self) -> dict[str, float]:
        """Accuracy (percent) per multiple-choice task."""
        return {t: float(s["acc"]) for t, s in self.control["tasks"].items() if "acc" in s}

    def to_json(self) -> dict[str, Any]:
        return {"target": dict(self.target), "control": dict(self.control), "kl": dict(self.kl)}


@dataclass(frozen=True)
class MethodTune:
    """A method's calibrations (configuration id → :class:`Calibration`, in order), its
    α interval, the configuration chosen (the best feasible probe over all of them; ties:
    smaller α, then the earlier configuration; ``None`` when none was feasible) and the
    chosen setting's held-out figures."""

    description: str
    interval: tuple[float, float]
    calibrations: Mapping[str, Calibration]
    chosen: str | None
    held_out: HeldOut | None

    @property
    def feasible(self) -> bool:
        return self.chosen is not None

    @property
    def best(self) -> ProbeRecord | None:
        """The chosen probe (on the tuning part)."""
        return None if self.chosen is None else self.calibrations[self.chosen].best

    @property
    def alpha(self) -> float | None:
        best = self.best
        return None if best is None else best.alpha

    @property
    def reason(self) -> str:
        """Why nothing was feasible (each configuration's reason), or ``""``."""
        if self.feasible:
            return ""
        return "; ".join(f"{cid}: {c.reason}" for cid, c in self.calibrations.items())

    @property
    def used(self) -> int:
        """Probes made over all configurations."""
        return sum(c.used for c in self.calibrations.values())

    def to_json(self) -> dict[str, Any]:
        best = self.best
        return {
            "description": self.description,
            "interval": list(self.interval),
            "feasible": self.feasible,
            "chosen": self.chosen,
            "alpha": self.alpha,
            "tuning_target": None if best is None else best.target,
            "tuning_harms": None if best is None else dict(best.harms),
            "reason": self.reason,
            "evaluations_used": self.used,
            "held_out": None if self.held_out is None else self.held_out.to_json(),
            "calibrations": {cid: c.to_json() for cid, c in self.calibrations.items()},
        }
