"""Calibration under a harm budget: the largest strength α whose harms stay within a budget,
found with a fixed number of (expensive) evaluations. Pure and model-free.

``evaluate(α)`` returns a :class:`Probe`: the target (higher is better, e.g. TruthfulQA
MC1/MC2) and the harms (e.g. ``control_points`` lost on control tasks, ``kl_nats`` of mean
KL on neutral text). A probe is *feasible* when its target and every harm are finite and
every budgeted harm is at most its limit (:class:`Budget`).

Search (with a budget), assuming harm grows with α (monotone):

1. bracket: evaluate ``lo``; if it is infeasible, stop — there is no feasible setting in
   ``[lo, hi]`` (1 evaluation used). Then evaluate ``hi``; if it is feasible, the whole
   interval is within budget, and the remaining evaluations go to a log-spaced grid
   strictly inside ``(lo, hi)`` (the target need not be monotone).
2. bisection: with ``lo`` feasible and ``hi`` not, each remaining evaluation probes the
   **geometric** midpoint ``sqrt(a·b)`` of the bracket ``[a, b]`` (feasible → ``a``, else
   ``b``), so after ``E`` evaluations ``b / a = (hi / lo) ** (1 / 2 ** (E - 2))``: the
   bisection is geometric because strengths span decades.

Without a budget (no limit set), the evaluations go to a log-spaced grid over
``[lo, hi]`` (both ends included). In every mode exactly ``evaluations`` calls are made,
except when ``lo`` already exceeds the budget (then :attr:`Calibration.used` says how many).

The result is the best feasible probe by target (ties: the smaller α) — with a monotone
harm and a target that rises with α that is the probe nearest the boundary, but the
maximum over all feasible probes is taken — or an explicit infeasible outcome
(``feasible=False`` with the reason).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Budget",
    "Calibration",
    "Probe",
    "ProbeRecord",
    "calibrate",
    "log_grid",
]

Mode = Literal["bisection", "grid"]


@dataclass(frozen=True)
class Budget:
    """The harm allowed: ``control_points`` = the largest control-task loss (accuracy
    points, unedited minus edited), ``kl_nats`` = the largest mean KL on neutral text;
    ``None`` leaves that measure unconstrained. ``extra``: more ``(harm name, limit)``
    pairs (e.g. ``("stereotype_points", 0.0)`` for the BBQ target). No limit at all = no
    budget."""

    control_points: float | None = None
    kl_nats: float | None = None
    extra: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        for name, limit in self.limits.items():
            if not math.isfinite(limit):
                raise ValueError(f"the budget on {name} must be a finite number, got {limit!r}")

    @property
    def limits(self) -> dict[str, float]:
        """``{harm name: largest allowed value}`` of the constrained measures."""
        limits = {
            name: float(value)
            for name, value in (("control_points", self.control_points), ("kl_nats", self.kl_nats))
            if value is not None
        }
        limits.update((name, float(value)) for name, value in self.extra)
        return limits

    @property
    def empty(self) -> bool:
        """No measure is constrained."""
        return not self.limits

    def with_limit(self, name: str, limit: float) -> Budget:
        """A copy with one more (or a replaced) ``extra`` limit."""
        kept = tuple((n, v) for n, v in self.extra if n != name)
        return Budget(self.control_points, self.kl_nats, (*kept, (name, float(limit))))

    def violations(self, harms: Mapping[str, float]) -> list[str]:
        """Why ``harms`` is not within the budget (``[]`` when it is): every non-finite
        harm, and every budgeted harm above its limit.

        Raises:
            KeyError: a budgeted harm is missing from ``harms`` (the caller's mistake).
        """
        reasons = [f"{n} is {v}" for n, v in harms.items() if not math.isfinite(v)]
        for name, limit in self.limits.items():
            if name not in harms:
                raise KeyError(f"the probe reports no harm {name!r} (has {sorted(harms)})")
            value = harms[name]
            if math.isfinite(value) and value > limit:
                reasons.append(f"{name} {value:.4g} > {limit:.4g}")
        return reasons

    def to_json(self) -> dict[str, Any]:
        return {
            "control_points": self.control_points,
            "kl_nats": self.kl_nats,
            "extra": {n: v for n, v in self.extra},
        }


@dataclass(frozen=True)
class Probe:
    """What one evaluation at a strength found: ``target`` (higher is better) and
    ``harms`` (name → value, higher is worse)."""

    target: float
    harms: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ProbeRecord:
    """One evaluation, in call order: ``alpha``, what it found, and whether it was within
    the budget (``reason`` says why not)."""

    alpha: float
    target: float
    harms: Mapping[str, float]
    feasible: bool
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "target": self.target,
            "harms": dict(self.harms),
            "feasible": self.feasible,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProbeRecord:
        return cls(
            float(data["alpha"]),
            float(data["target"]),
            {k: float(v) for k, v in data["harms"].items()},
            bool(data["feasible"]),
            str(data.get("reason", "")),
        )


@dataclass(frozen=True)
class Calibration:
    """The outcome: every probe (call order), the chosen one (``best``, ``None`` when
    nothing was feasible), the final bracket ``(a, b)`` of the bisection (``a`` feasible,
    ``b`` not; ``b = None`` when ``hi`` was feasible; ``None`` in grid mode or when ``lo``
    was infeasible), the mode, the interval and the evaluations asked for."""

    feasible: bool
    best: ProbeRecord | None
    probes: tuple[ProbeRecord, ...]
    reason: str
    mode: Mode
    interval: tuple[float, float]
    evaluations: int
    bracket: tuple[float, float | None] | None = None

    @property
    def used(self) -> int:
        """Evaluations made (``evaluations`` unless ``lo`` proved infeasible early)."""
        return len(self.probes)

    @property
    def alpha(self) -> float | None:
        """The chosen strength (``None`` when nothing was feasible)."""
        return None if self.best is None else self.best.alpha

    def to_json(self) -> dict[str, Any]:
        return {
            "feasible": self.feasible,
            "alpha": self.alpha,
            "best": None if self.best is None else self.best.to_json(),
            "reason": self.reason,
            "mode": self.mode,
            "interval": list(self.interval),
            "evaluations": self.evaluations,
            "used": self.used,
            "bracket": None if self.bracket is None else list(self.bracket),
            "probes": [p.to_json() for p in self.probes],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Calibration:
        probes = tuple(ProbeRecord.from_json(p) for p in data["probes"])
        bracket = data.get("bracket")
        lo, hi = data["interval"]
        return cls(
            bool(data["feasible"]),
            None if data["best"] is None else ProbeRecord.from_json(data["best"]),
            probes,
            str(data["reason"]),
            data["mode"],
            (float(lo), float(hi)),
            int(data["evaluations"]),
            None if bracket is None else (float(bracket[0]), bracket[1]),
        )


def log_grid(lo: float, hi: float, n: int) -> list[float]:
    """``n`` log-spaced points from ``lo`` to ``hi`` (both included; ``[lo]`` for n = 1)."""
    if n < 1:
        raise ValueError(f"a grid needs at least one point, got {n}")
    if n == 1:
        return [lo]
    ratio = math.log(hi / lo)
    return [lo * math.exp(ratio * i / (n - 1)) for i in range(n - 1)] + [hi]


def _geometric_mid(a: float, b: float) -> float:
    return math.sqrt(a * b)


def _best(probes: list[ProbeRecord]) -> ProbeRecord | None:
    """The feasible probe with the highest target; of equal targets the smaller α."""
    feasible = [p for p in probes if p.feasible]
    if not feasible:
        return None
    return min(feasible, key=lambda p: (-p.target, p.alpha))


def calibrate(
    evaluate: Callable[[float], Probe],
    budget: Budget,
    lo: float,
    hi: float,
    evaluations: int,
    *,
    on_probe: Callable[[ProbeRecord], None] | None = None,
) -> Calibration:
    """The largest-target α in ``[lo, hi]`` within ``budget``, with ``evaluations`` calls
    of ``evaluate`` (see the module docstring for the search). ``on_probe`` is told of
    every probe as it is made.

    Raises:
        ValueError: ``lo <= 0``, ``hi <= lo``, non-finite ends, or ``evaluations < 1``.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0 or hi <= lo:
        raise ValueError(f"the α interval needs 0 < lo < hi (finite), got [{lo}, {hi}]")
    if isinstance(evaluations, bool) or evaluations < 1:
        raise ValueError(f"evaluations must be a positive integer, got {evaluations!r}")
    probes: list[ProbeRecord] = []

    def probe(alpha: float) -> ProbeRecord:
        found = evaluate(alpha)
        target = float(found.target)
        harms = {k: float(v) for k, v in found.harms.items()}
        reasons = budget.violations(harms)
        if not math.isfinite(target):
            reasons.insert(0, f"target is {target}")
        record = ProbeRecord(alpha, target, harms, not reasons, "; ".join(reasons))
        probes.append(record)
        if on_probe is not None:
            on_probe(record)
        return record

    def done(mode: Mode, reason: str, bracket: tuple[float, float | None] | None) -> Calibration:
        best = _best(probes)
        if best is None and not reason:
            reason = "no probe was feasible"
        return Calibration(
            best is not None,
            best,
            tuple(probes),
            reason,
            mode,
            (lo, hi),
            evaluations,
            bracket,
        )

    if budget.empty:
        for alpha in log_grid(lo, hi, evaluations):
            probe(alpha)
        reason = "" if _best(probes) else "no probe gave finite values"
        return done("grid", reason, None)

    first = probe(lo)
    if not first.feasible:
        return done(
            "bisection",
            f"no feasible setting: even α={lo:.4g} exceeds the budget ({first.reason})",
            None,
        )
    if evaluations == 1:
        return done("bisection", "", (lo, None))
    last = probe(hi)
    if last.feasible:
        # the whole interval is within budget: look inside it for a better target
        inside = log_grid(lo, hi, evaluations)[1:-1]
        for alpha in inside:
            probe(alpha)
        return done("bisection", "", (hi, None))
    a, b = lo, hi
    for _ in range(evaluations - 2):
        mid = _geometric_mid(a, b)
        if probe(mid).feasible:
            a = mid
        else:
            b = mid
    return done("bisection", "", (a, b))
