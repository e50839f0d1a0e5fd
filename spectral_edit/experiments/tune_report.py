"""The report of ``sea tune``: every method's calibration and held-out figures in one typed
value, and its files (``report.json``, ``report.md``, ``pareto.png``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..demos.prompts import PLAIN, describe_prompts
from ..util.atomic import atomic_write_text
from ..util.extras import MissingExtraError
from ..util.report import markdown_table, write_json
from .calibrate import Budget
from .compare_results import MethodFailure
from .table import Table
from .tune_plot import HarmPoint, ParetoSeries, plot_pareto
from .tune_results import (
    CONTROL_HARM,
    KL_HARM,
    Baseline,
    MethodTune,
    TuneOptions,
    control_average,
    control_loss,
)

__all__ = ["PLOT", "TuneReport"]

PLOT = "pareto.png"


@dataclass(frozen=True)
class TuneReport:
    """One tuning run: the target (``name``, held-out ``headline`` metrics, the plot's
    ``gain_metric``, the parts' ``sizes``), the unedited model's figures, each method's
    result or failure in the order run, the budget in force (the options' and the
    target's own limits), the methods left out and why (``skipped``), and
    where the demonstrations came from. ``baseline_value``: the unedited model's tuning
    value (the gains' zero). ``prompts``: the prompt format of the demonstrations and every
    evaluation (:meth:`~spectral_edit.demos.prompts.PromptFormat.record`)."""

    model: str
    options: TuneOptions
    budget: Budget
    target: str
    headline: tuple[str, ...]
    gain_metric: str
    sizes: Mapping[str, int]
    baseline: Baseline
    baseline_value: float
    methods: Mapping[str, MethodTune | MethodFailure]
    skipped: Mapping[str, str]
    demos: str = ""
    prompts: Mapping[str, Any] = field(default_factory=PLAIN.record)

    @property
    def failed(self) -> list[str]:
        """The methods that failed (a rerun retries them)."""
        return [n for n, r in self.methods.items() if isinstance(r, MethodFailure)]

    @property
    def tuned(self) -> dict[str, MethodTune]:
        """The methods that ran through (order kept)."""
        return {n: r for n, r in self.methods.items() if isinstance(r, MethodTune)}

    @property
    def headers(self) -> list[str]:
        return [
            "method",
            "config",
            "α",
            "feasible",
            "tuning target",
            *(f"{m} (held out)" for m in self.headline),
            "control avg",
            "control loss",
            "KL mean",
            "KL p95",
        ]

    def _row(self, name: str, result: MethodTune) -> list[Any]:
        held = result.held_out
        best = result.best
        if held is None:
            figures: list[Any] = [None] * (len(self.headline) + 4)
        else:
            figures = [
                *(held.target.get(m) for m in self.headline),
                held.control_average,
                control_loss(self.baseline.control_report, held.control),
                _cell(held.kl.get("kl_mean")),
                _cell(held.kl.get("kl_p95")),
            ]
        return [
            name,
            result.chosen or "—",
            None if best is None else f"{best.alpha:.4g}",
            "yes" if result.feasible else "no",
            None if best is None else best.target,
            *figures,
        ]

    def table(self) -> Table:
        """The headline table: the unedited model, then one row per method."""
        base = self.baseline
        rows: list[list[Any]] = [
            [
                "none (unedited)",
                "—",
                "—",
                "—",
                self.baseline_value,
                *(base.report_target.get(m) for m in self.headline),
                control_average(base.control_report),
                0.0,
                "0",
                "0",
            ]
        ]
        for name, result in self.methods.items():
            if isinstance(result, MethodFailure):
                rows.append([name, f"failed: {result.error}", *[""] * (len(self.headers) - 2)])
            else:
                rows.append(self._row(name, result))
        return Table(f"held-out {self.target} under the harm budget", self.headers, rows)

    @property
    def summary(self) -> dict[str, dict[str, Any]]:
        """Per method that ran through: the chosen configuration and α, whether it was
        feasible, the tuning target, and the held-out headline metrics, control average
        and KL mean / p95 (``None`` where nothing was feasible)."""
        out = {}
        for name, result in self.tuned.items():
            held, best = result.held_out, result.best
            out[name] = {
                "chosen": result.chosen,
                "alpha": result.alpha,
                "feasible": result.feasible,
                "tuning_target": None if best is None else best.target,
                **{m: None if held is None else held.target.get(m) for m in self.headline},
                "control_average": None if held is None else held.control_average,
                "kl_mean": None if held is None else held.kl.get("kl_mean"),
                "kl_p95": None if held is None else held.kl.get("kl_p95"),
            }
        return out

    def to_json(self) -> dict[str, Any]:
        """The content of ``report.json``."""
        return {
            "model": self.model,
            "target": self.target,
            "options": self.options.to_json(),
            "budget": self.budget.to_json(),
            "sizes": dict(self.sizes),
            "demos": self.demos,
            "baseline": {
                **self.baseline.to_json(),
                "tune_value": self.baseline_value,
            },
            "methods": {name: result.to_json() for name, result in self.methods.items()},
            "skipped": dict(self.skipped),
            "prompts": dict(self.prompts),
        }

    def _budget_text(self) -> str:
        limits = self.budget.limits
        if not limits:
            return "no budget: each method's α is the best target on a log-spaced grid"
        return "budget " + ", ".join(f"{n} ≤ {v:g}" for n, v in limits.items())

    def markdown(self) -> str:
        """The report as Markdown: headline table, skipped methods, control tasks, and the
        full probe trace per method."""
        o = self.options
        lines = [
            f"# Calibration under a harm budget: {self.model}",
            "",
            f"Target: {self.target} (tuning value: "
            + (
                "mean of MC1 and MC2"
                if self.target == "truthfulqa"
                else "BBQ accuracy; a probe whose stereotype rate is above the unedited "
                "model's is infeasible"
            )
            + f"), tuned on {self.sizes['tune']} items and reported on {self.sizes['report']} "
            f"held-out items. {self._budget_text()}. Each method gets {o.evaluations} "
            "evaluations, split evenly over its configurations; with a budget the α of each "
            "configuration is found by bracketing [lo, hi] and geometric bisection, assuming "
            "harm grows with α. Control: mean accuracy over "
            f"{', '.join(o.control_tasks)} (items [0, {o.control_limit}) tune, "
            f"[{o.control_limit}, {2 * o.control_limit}) report); control loss = unedited "
            "minus edited, in points. KL: mean and 95th percentile per token of "
            f"KL(edited ‖ unedited) in nats on neutral texts ([0, {o.kl_texts}) tune, "
            f"[{o.kl_texts}, {2 * o.kl_texts}) report).",
            "",
        ]
        if self.demos:
            lines += [f"Demonstrations: {self.demos}.", ""]
        lines += [f"Prompts: {describe_prompts(self.prompts)}.", ""]
        lines += [self.table().markdown()]
        for name, why in self.skipped.items():
            lines.append(f"- {name}: not tuned ({why})")
        if self.skipped:
            lines.append("")
        lines += self._control_section()
        lines += self._trace_section()
        return "\n".join(lines) + "\n"

    def _control_section(self) -> list[str]:
        tasks = list(self.baseline.control_report["tasks"])
        base = {t: s.get("acc") for t, s in self.baseline.control_report["tasks"].items()}
        rows: list[list[Any]] = [["none (unedited)", *(base[t] for t in tasks)]]
        for name, result in self.tuned.items():
            if result.held_out is not None:
                per = result.held_out.control_tasks
                rows.append([name, *(per.get(t) for t in tasks)])
        return [
            "## Control tasks, held-out items (accuracy, percent)",
            "",
            markdown_table(["method", *tasks], rows),
        ]

    def _trace_section(self) -> list[str]:
        harm_names: list[str] = []
        for result in self.tuned.values():
            for calibration in result.calibrations.values():
                for probe in calibration.probes:
                    harm_names += [h for h in probe.harms if h not in harm_names]
        headers = ["config", "#", "α", "tuning target", *harm_names, "feasible", "note"]
        lines = ["## Probes (tuning part, call order per configuration)", ""]
        for name, result in self.tuned.items():
            lines += [
                f"### {name}: α in [{result.interval[0]:g}, {result.interval[1]:g}]",
                "",
            ]
            rows: list[list[Any]] = []
            for cid, calibration in result.calibrations.items():
                for i, p in enumerate(calibration.probes, 1):
                    chosen = p is result.best
                    rows.append(
                        [
                            cid,
                            i,
                            f"{p.alpha:.4g}",
                            p.target,
                            *(_cell(p.harms.get(h)) for h in harm_names),
                            ("**chosen**" if chosen else "yes") if p.feasible else "no",
                            p.reason,
                        ]
                    )
                if calibration.reason:
                    rows.append(
                        [cid, "", "", None, *[""] * len(harm_names), "", calibration.reason]
                    )
            lines += [markdown_table(headers, rows)]
        return lines

    def series(self) -> list[ParetoSeries]:
        """The plot's points: each method's probes and chosen settings as gains over the
        unedited model (tuning value on the tuning part, ``gain_metric`` held out)."""
        base_tune = self.baseline_value
        base_report = self.baseline.report_target.get(self.gain_metric)
        out = []
        for name, result in self.tuned.items():
            probes = tuple(
                HarmPoint(
                    p.harms.get(CONTROL_HARM, math.nan),
                    p.harms.get(KL_HARM, math.nan),
                    p.target - base_tune,
                )
                for c in result.calibrations.values()
                for p in c.probes
            )
            best = result.best
            chosen = (
                None
                if best is None
                else HarmPoint(
                    best.harms.get(CONTROL_HARM, math.nan),
                    best.harms.get(KL_HARM, math.nan),
                    best.target - base_tune,
                )
            )
            held = result.held_out
            held_point = None
            if held is not None:
                value = held.target.get(self.gain_metric)
                gain = math.nan if value is None or base_report is None else value - base_report
                held_point = HarmPoint(
                    control_loss(self.baseline.control_report, held.control),
                    float(held.kl.get("kl_mean", math.nan)),
                    gain,
                )
            out.append(ParetoSeries(name, probes, chosen, held_point))
        return out

    def write(self, folder: str | Path, echo: Callable[[str], None] = print) -> None:
        """Write ``report.json``, ``report.md`` and, where a method ran through and
        matplotlib (the ``plots`` extra) is installed, ``pareto.png``; else ``echo`` says
        that the plot was skipped."""
        folder = Path(folder)
        write_json(folder / "report.json", self.to_json())
        atomic_write_text(folder / "report.md", self.markdown())
        if not self.tuned:
            return
        budget = self.budget
        target = "mean of MC1 and MC2" if self.target == "truthfulqa" else "accuracy"
        try:
            plot_pareto(
                self.series(),
                folder / PLOT,
                title=f"Target gain against harm: {self.model} ({self.target})",
                tuning_label=f"gain in {target}, tuning part (points)",
                held_out_label=f"gain in {self.gain_metric}, held out (points)",
                control_budget=budget.control_points,
                kl_budget=budget.kl_nats,
            )
        except MissingExtraError as error:
            echo(f"plot skipped: {error}")


def _cell(value: float | None) -> str:
    """A harm or a KL: 4 significant digits (KL values are often far below 0.1)."""
    return "—" if value is None else f"{value:.4g}"
