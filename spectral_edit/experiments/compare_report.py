"""The report of ``sea compare``: every method's held-out figures in one typed value, and
its files (``report.json``, ``report.md``, ``truthfulness_vs_control.png``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ..demos.prompts import PLAIN, describe_prompts
from ..util.atomic import atomic_write_text
from ..util.extras import MissingExtraError
from ..util.report import fmt, markdown_table, write_json
from .compare_plot import plot_truthfulness_vs_control
from .compare_results import CompareOptions, MethodFailure, MethodResult, MethodSummary
from .folds import DIRECTIONS
from .overhead import OVERHEAD_REPEATS
from .table import Table

HEADERS = [
    "method",
    "MC1",
    "MC2",
    "MC3",
    "control avg",
    "KL mean",
    "KL p95",
    "rep-4 %",
    "fluency ppl",
    "fit s",
    "eval s",
    "overhead ms/tok",
    "overhead %",
]
PLOT = "truthfulness_vs_control.png"


@dataclass(frozen=True)
class CompareReport:
    """One comparison: ``sizes`` and ``tokens`` (scored tokens) per fold, each method's
    result or failure in the order run, the seconds the shared capture took, and the
    prompts every method and evaluation used (:meth:`~spectral_edit.demos.prompts.
    PromptFormat.record`)."""

    model: str
    options: CompareOptions
    sizes: Mapping[int, int]
    tokens: Mapping[int, int]
    methods: Mapping[str, MethodResult | MethodFailure]
    capture_seconds: float
    prompts: Mapping[str, Any] = field(default_factory=PLAIN.record)

    @cached_property
    def summaries(self) -> dict[str, MethodSummary]:
        """The held-out figures of each method that ran through (order kept)."""
        return {
            name: result.summary(self.options, self.sizes)
            for name, result in self.methods.items()
            if isinstance(result, MethodResult)
        }

    @property
    def failed(self) -> list[str]:
        """The methods that failed (a rerun retries them)."""
        return [n for n, r in self.methods.items() if isinstance(r, MethodFailure)]

    def to_json(self) -> dict[str, Any]:
        """The content of ``report.json``."""
        rows = {
            name: result.to_json()
            if isinstance(result, MethodFailure)
            else self.summaries[name].to_json()
            for name, result in self.methods.items()
        }
        return {
            "model": self.model,
            "options": asdict(self.options),
            "questions": {f"fold{f}": n for f, n in self.sizes.items()},
            "tokens_scored": dict(self.tokens),
            "methods": rows,
            "capture_seconds": self.capture_seconds,
            "prompts": dict(self.prompts),
        }

    def table(self) -> Table:
        """The headline table: one row per method (a failure gives its error)."""
        rows: list[list[Any]] = []
        for name, result in self.methods.items():
            if isinstance(result, MethodFailure):
                rows.append([name, f"failed: {result.error}", *[""] * (len(HEADERS) - 2)])
                continue
            s = self.summaries[name]
            rows.append(
                [
                    name,
                    s.mc1,
                    s.mc2,
                    s.mc3,
                    s.control_average,
                    s.harm_value("kl_mean"),
                    s.harm_value("kl_p95"),
                    s.harm_value("repeat4"),
                    s.harm_value("fluency_ppl"),
                    s.fit_seconds,
                    s.eval_seconds,
                    s.overhead.ms_per_token,
                    s.overhead.percent,
                ]
            )
        return Table("held-out TruthfulQA and control tasks", HEADERS, rows)

    def markdown(self) -> str:
        """The report as Markdown: headline table, chosen settings, control tasks, tuning."""
        o = self.options
        lines = [
            f"# Method comparison: {self.model}",
            "",
            "TruthfulQA MC1/MC2/MC3 (percent) on held-out questions: each method's setting is "
            f"chosen on fold 1 ({self.sizes[1]} questions) and scored on fold 2 "
            f"({self.sizes[2]})"
            + (", and the reverse, averaged" if o.both_directions else "")
            + ". Control: mean accuracy over the multiple-choice control tasks "
            f"({o.control_limit or 'all'} items each) of the selected "
            "settings. Fit s: capture, fitting or training from the demonstrations. Eval s: "
            "TruthfulQA scoring time of the held-out run(s). Overhead: extra scoring time per "
            "token against the unedited model, both timed back to back on the first "
            f"{o.overhead_questions} held-out questions (fastest of "
            f"{OVERHEAD_REPEATS}); `none` shows the timing noise. Harm of the fold-1 choice: "
            f"KL(edited ‖ unedited) of the next-token distribution per token (nats) on "
            f"{o.harm_texts} neutral texts (HaluEval general ChatGPT responses, at most "
            f"{o.harm_max_tokens} tokens each), and on greedy generations of "
            f"{o.harm_qa_prompts} TruthfulQA prompts and the open prompts (at most "
            f"{o.harm_gen_tokens} new tokens): repeated 4-grams (percent) and the unedited "
            "model's perplexity of the generated text.",
            "",
            f"Prompts: {describe_prompts(self.prompts)}.",
            "",
            self.table().markdown(),
            "## Selected settings",
            "",
            markdown_table(
                ["method", "chosen on fold 1", "chosen on fold 2"],
                [
                    [name, s.selections[DIRECTIONS[0]], s.selections.get(DIRECTIONS[1])]
                    for name, s in self.summaries.items()
                ],
            ),
        ]
        if self.summaries:
            lines += self._control_and_tuning()
        return "\n".join(lines) + "\n"

    def _control_and_tuning(self) -> list[str]:
        ok = self.summaries
        tasks = list(next(iter(ok.values())).control_tasks)
        lines = [
            "## Control tasks (accuracy, percent)",
            "",
            markdown_table(
                ["method", *tasks],
                [[n, *(s.control_tasks[t] for t in tasks)] for n, s in ok.items()],
            ),
        ]
        for name, s in ok.items():
            for task, why in s.control_skipped.items():
                lines.append(f"- {name}: {task} skipped ({why})")
        lines += self._generations()
        lines += ["", "## Tuning (every setting scored: MC1 / MC2)", ""]
        tuning_rows = []
        for name, s in ok.items():
            for sid, by_fold in s.tuning.items():
                cells = [
                    f"{fmt(score['mc1'])} / {fmt(score['mc2'])}" if score else None
                    for score in (by_fold.get(f) for f in (1, 2))
                ]
                tuning_rows.append([name, sid, *cells])
        lines.append(markdown_table(["method", "setting", "fold 1", "fold 2"], tuning_rows))
        return lines

    def _generations(self) -> list[str]:
        """A few generations of each method's fold-1 choice beside the unedited model's."""
        rows = [
            [name, sample["prompt"][-80:], sample["unedited"], sample["edited"]]
            for name, s in self.summaries.items()
            for sample in s.samples
        ]
        if not rows:
            return []
        cells = [[" ".join(str(c).split()) for c in row] for row in rows]
        return [
            "",
            "## Generations (fold-1 choice; prompt ends, unedited, edited)",
            "",
            markdown_table(["method", "prompt", "unedited", "edited"], cells),
        ]

    def write(self, folder: str | Path, echo: Callable[[str], None] = print) -> None:
        """Write ``report.json``, ``report.md`` and, where a method ran through and
        matplotlib (the ``plots`` extra) is installed, the plot; else ``echo`` says that
        the plot was skipped."""
        folder = Path(folder)
        write_json(folder / "report.json", self.to_json())
        atomic_write_text(folder / "report.md", self.markdown())
        if not self.summaries:
            return
        points = {
            name: (s.control_average, s.mc2)
            for name, s in self.summaries.items()
            if s.control_average is not None
        }
        try:
            plot_truthfulness_vs_control(points, self.model, folder / PLOT)
        except MissingExtraError as error:
            echo(f"plot skipped: {error}")
