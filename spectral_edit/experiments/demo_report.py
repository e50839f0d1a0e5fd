"""The report of ``sea demo``: the editor fitted, TruthfulQA before and after, as one typed
value with its files (``report.json``, ``report.md``) and its screen tables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..demos.prompts import describe_prompts
from ..util.atomic import atomic_write_text
from ..util.report import RANK_HEADERS, ranks_rows, write_json
from .table import Table

Summary = Mapping[str, Any]
"""A TruthfulQA summary: ``mc1``, ``mc2``, ``mc3`` (percent), ``n``, ``seconds``."""

SCORE_HEADERS = ["model", "MC1", "MC2", "MC3", "fit s", "eval s"]


@dataclass(frozen=True)
class DemoEvaluation:
    """TruthfulQA (``mc_file``) scored unedited and with the editor."""

    mc_file: str
    unedited: Summary
    edited: Summary


@dataclass(frozen=True)
class DemoReport:
    """What the demo job did: the demonstrations (``demonstrations`` says where they came
    from), the fit (``options``: everything its stored result is keyed by), the editor's
    metadata, and the evaluation, ``None`` where TruthfulQA was not available."""

    model: str
    demonstrations: str
    n_demonstrations: int
    options: Mapping[str, Any]
    label: str
    fit_seconds: float
    editor_path: str
    model_load_seconds: float
    editor: Mapping[str, Any]
    evaluation: DemoEvaluation | None = None

    def ranks(self) -> Table:
        """The editor's ranks, energies and signature per layer."""
        return Table("SEA ranks per layer", RANK_HEADERS, ranks_rows(self.editor))

    def scores(self) -> Table | None:
        """TruthfulQA unedited and edited, with the seconds (``None``: not evaluated)."""
        e = self.evaluation
        if e is None:
            return None
        u, d = e.unedited, e.edited
        rows = [
            ["unedited", u["mc1"], u["mc2"], u["mc3"], None, u["seconds"]],
            [self.label, d["mc1"], d["mc2"], d["mc3"], self.fit_seconds, d["seconds"]],
        ]
        return Table(f"TruthfulQA ({u['n']} questions, {e.mc_file})", SCORE_HEADERS, rows)

    def tables(self) -> list[Table]:
        """What the CLI shows: the ranks, then the scores where evaluated."""
        scores = self.scores()
        return [self.ranks()] if scores is None else [self.ranks(), scores]

    def to_json(self) -> dict[str, Any]:
        """The content of ``report.json``; without an evaluation, the fit's record and
        ``"evaluated": False``."""
        e = self.evaluation
        if e is None:
            return {
                "fit": {"seconds": self.fit_seconds, "path": self.editor_path},
                "evaluated": False,
            }
        return {
            "model": self.model,
            "demonstrations": self.demonstrations,
            "n_demonstrations": self.n_demonstrations,
            "options": dict(self.options),
            "mc_file": e.mc_file,
            "n_questions": e.unedited["n"],
            "unedited": dict(e.unedited),
            "edited": dict(e.edited),
            "fit_seconds": self.fit_seconds,
            "model_load_seconds": self.model_load_seconds,
            "editor": dict(self.editor),
        }

    def markdown(self) -> str:
        """The report as Markdown: sources, the scores table, the ranks table."""
        scores = self.scores()
        lines = [f"# SEA truthfulness demo: {self.model}\n"]
        if self.evaluation is not None and scores is not None:
            e = self.evaluation
            lines += [
                f"Demonstrations: {self.demonstrations}. TruthfulQA file: {e.mc_file}, "
                f"{e.unedited['n']} questions. Prompts: {describe_prompts(self.editor)}.\n",
                scores.markdown(),
            ]
        lines += ["\n## Ranks per layer\n", self.ranks().markdown()]
        return "\n".join(lines)

    def write(self, folder: str | Path) -> Path | None:
        """Write ``report.json`` and ``report.md`` into ``folder`` where evaluated;
        returns the Markdown file (``None``: nothing written)."""
        if self.evaluation is None:
            return None
        folder = Path(folder)
        write_json(folder / "report.json", self.to_json())
        atomic_write_text(folder / "report.md", self.markdown())
        return folder / "report.md"
