"""What ``sea compare`` is run with and what it finds, as typed values: the options, each
scored unit, each method's result (or failure), and a method's held-out figures
(:meth:`MethodResult.summary`).

The JSON forms (``to_json``) are the stored units' records and the rows of
``report.json``, unchanged from the dictionaries the comparison wrote before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..data.control import DEFAULT_CONTROL_TASKS
from .folds import Direction
from .overhead import OverheadTiming

Summary = Mapping[str, Any]
"""A TruthfulQA summary: ``mc1``, ``mc2``, ``mc3`` (percent), ``n``, ``seconds``."""
ControlRun = Mapping[str, Any]
"""The control tasks' summary of one setting (:func:`~spectral_edit.evaluate.control.
evaluate_control` without ``per_item``): ``tasks``, ``average``, ``seconds``."""

METRICS = ("mc1", "mc2", "mc3")


@dataclass(frozen=True)
class CompareOptions:
    """What a comparison is run with (all of it goes into the stored units' keys)."""

    methods: tuple[str, ...]
    control_tasks: tuple[str, ...] = DEFAULT_CONTROL_TASKS
    control_limit: int | None = 50
    neutral: str = "generate"
    batch_size: int = 16
    seed: int = 0
    both_directions: bool = False
    overhead_questions: int = 10
    harm_texts: int = 16
    harm_max_tokens: int = 128
    harm_gen_tokens: int = 48
    harm_qa_prompts: int = 8

    def __post_init__(self) -> None:
        for name in HARM_OPTIONS:
            value = getattr(self, name)
            least = 0 if name in ("harm_texts", "harm_qa_prompts") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


HARM_OPTIONS = ("harm_texts", "harm_max_tokens", "harm_gen_tokens", "harm_qa_prompts")
"""The options only the harm units depend on (0 texts: no harm measures)."""

HarmRun = Mapping[str, Any]
"""The harm of one setting: ``summary`` (:attr:`~spectral_edit.evaluate.harm.HarmResult.
summary`) and ``samples`` (a few prompts with the unedited and the edited generation)."""


@dataclass(frozen=True)
class Unit:
    """One setting scored on one fold: the summary, the per-question scores and the
    seconds its method took to prepare, configure it and capture activations."""

    setting: Mapping[str, Any]
    summary: Summary
    prepare_seconds: float
    configure_seconds: float
    capture_seconds: float
    per_question: list[dict[str, float]]

    @property
    def fit_seconds(self) -> float:
        """Everything the setting took before scoring."""
        return self.prepare_seconds + self.configure_seconds + self.capture_seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "setting": dict(self.setting),
            "summary": dict(self.summary),
            "prepare_seconds": self.prepare_seconds,
            "configure_seconds": self.configure_seconds,
            "capture_seconds": self.capture_seconds,
            "per_question": self.per_question,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Unit:
        return cls(
            dict(data["setting"]),
            dict(data["summary"]),
            float(data["prepare_seconds"]),
            float(data["configure_seconds"]),
            float(data["capture_seconds"]),
            list(data["per_question"]),
        )


@dataclass(frozen=True)
class MethodFailure:
    """A method that raised: ``"<ExceptionType>: <message>"``."""

    error: str

    def to_json(self) -> dict[str, Any]:
        return {"error": self.error}


@dataclass(frozen=True)
class MethodSummary:
    """A method's held-out figures: the question-weighted mean over the directions of the
    selected settings' scores on their test folds, the control tasks (averaged over the
    selected settings), timings and overheads, and every tuning score."""

    mc1: float
    mc2: float
    mc3: float
    selections: Mapping[Direction, str]
    control_average: float | None
    control_tasks: Mapping[str, float]
    control_skipped: Mapping[str, str]
    fit_seconds: float
    eval_seconds: float
    control_seconds: float
    overhead: OverheadTiming
    tuning: Mapping[str, Mapping[int, Summary]]
    harm: Mapping[str, Any] | None = None
    samples: tuple[Mapping[str, str], ...] = ()

    def harm_value(self, key: str) -> Any:
        """One figure of :attr:`harm` (``None`` without harm measures)."""
        return None if self.harm is None else self.harm.get(key)

    def to_json(self) -> dict[str, Any]:
        return {
            "mc1": self.mc1,
            "mc2": self.mc2,
            "mc3": self.mc3,
            "selections": {d.label: sid for d, sid in self.selections.items()},
            "control_average": self.control_average,
            "control_tasks": dict(self.control_tasks),
            "control_skipped": dict(self.control_skipped),
            "fit_seconds": self.fit_seconds,
            "eval_seconds": self.eval_seconds,
            "control_seconds": self.control_seconds,
            "overhead_ms_per_token": self.overhead.ms_per_token,
            "overhead_percent": self.overhead.percent,
            "overhead_tokens": self.overhead.tokens,
            "tuning": {
                sid: {f"fold{f}": dict(s) for f, s in by_fold.items()}
                for sid, by_fold in self.tuning.items()
            },
            "harm": None if self.harm is None else dict(self.harm),
            "samples": [dict(x) for x in self.samples],
        }


def held_out_metrics(
    units: Mapping[str, Mapping[int, Unit]],
    selections: Mapping[Direction, str],
    sizes: Mapping[int, int],
) -> dict[str, float]:
    """MC1/MC2/MC3 of the selected settings on their test folds (``units``: setting id →
    fold → unit; ``selections``: direction → setting id), the question-weighted mean over
    the directions (``sizes``: questions per fold)."""
    held_out = [(d, units[sid][d.test]) for d, sid in selections.items()]
    total = sum(sizes[d.test] for d, _ in held_out)
    return {m: sum(sizes[d.test] * u.summary[m] for d, u in held_out) / total for m in METRICS}


@dataclass(frozen=True)
class MethodResult:
    """A method's units (setting id → fold → unit, grid order), the setting chosen per
    direction, the control run of each chosen setting and the overhead timing of the
    first direction's choice."""

    description: str
    units: Mapping[str, Mapping[int, Unit]]
    selections: Mapping[Direction, str]
    control: Mapping[str, ControlRun]
    overhead: OverheadTiming
    harm: Mapping[str, HarmRun] | None = None

    def summary(self, options: CompareOptions, sizes: Mapping[int, int]) -> MethodSummary:
        """The held-out figures; ``sizes``: questions per fold."""
        held_out = [(d, self.units[sid][d.test]) for d, sid in self.selections.items()]
        metrics = held_out_metrics(self.units, self.selections, sizes)
        controls = [self.control[sid] for sid in self.selections.values()]
        first = controls[0]["tasks"]
        scored = [t for t in options.control_tasks if "acc" in first[t]]
        averages = [c["average"]["acc"] for c in controls if c["average"]["acc"] is not None]
        first_choice = self.selections[next(iter(self.selections))]
        harm = None if self.harm is None else self.harm.get(first_choice)
        return MethodSummary(
            mc1=metrics["mc1"],
            mc2=metrics["mc2"],
            mc3=metrics["mc3"],
            selections=self.selections,
            control_average=sum(averages) / len(averages) if averages else None,
            control_tasks={
                t: sum(c["tasks"][t]["acc"] for c in controls) / len(controls) for t in scored
            },
            control_skipped={
                t: first[t]["skipped"] for t in options.control_tasks if "skipped" in first[t]
            },
            fit_seconds=max(unit.fit_seconds for _, unit in held_out),
            eval_seconds=sum(unit.summary["seconds"] for _, unit in held_out),
            control_seconds=sum(c["seconds"] for c in controls),
            overhead=self.overhead,
            tuning={
                sid: {f: unit.summary for f, unit in by_fold.items()}
                for sid, by_fold in self.units.items()
            },
            harm=None if harm is None else harm["summary"],
            samples=() if harm is None else tuple(harm["samples"]),
        )
