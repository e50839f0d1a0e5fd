"""The rows of a truthfulness grid (``grid.jsonl``) and the TruthfulQA folds they cover.

A row is one setting evaluated on a set of questions: ``name``, ``options``, optional
``ranks``, ``question_index`` (positions in ``questions.json``; absent = every question,
the format of the first grids) and per-question ``mc1``/``mc2``/``mc3`` aligned with it.
One setting may have several rows (fold 1 first, fold 2 later); :func:`merge_rows` joins
them into one score table per setting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from spectral_edit.data import load_fold, load_mc_task, resolve
from spectral_edit.data.truthfulqa import normalize_question
from spectral_edit.evaluate.metrics import tuning_criterion

METRICS = ("mc1", "mc2", "mc3")


@dataclass
class Setting:
    """Everything known about one setting: per-question scores by question position."""

    name: str
    options: dict
    ranks: dict | None = None
    scores: dict[int, dict[str, float]] = field(default_factory=dict)

    def covers(self, index: list[int]) -> bool:
        return all(i in self.scores for i in index)

    def mean(self, metric: str, index: list[int]) -> float:
        """Percent over the questions at ``index`` (all must be covered)."""
        return 100.0 * sum(self.scores[i][metric] for i in index) / len(index)


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def merge_rows(rows: list[dict]) -> dict[str, Setting]:
    """One :class:`Setting` per name, in order of first appearance."""
    settings: dict[str, Setting] = {}
    for row in rows:
        setting = settings.setdefault(
            row["name"], Setting(row["name"], row.get("options", {}), row.get("ranks"))
        )
        setting.ranks = setting.ranks or row.get("ranks")
        index = row.get("question_index", range(len(row["mc1"])))
        for k, i in enumerate(index):
            setting.scores[i] = {m: row[m][k] for m in METRICS}
    return settings


def grid_questions(grid_dir: Path, data_dir: str) -> list[str]:
    """The question list the grid's positions refer to: ``questions.json`` where the run
    wrote it, else every question of ``mc_task_v0.json`` in file order (a full run)."""
    path = grid_dir / "questions.json"
    if path.exists():
        return json.loads(path.read_text())
    return [q.question for q in load_mc_task(resolve("truthfulqa/mc_task_v0.json", data_dir))]


def fold_positions(questions: list[str], data_dir: str) -> dict[int, list[int]]:
    """For folds 1 and 2, the sorted positions in ``questions`` of the fold's questions."""
    position = {normalize_question(q): i for i, q in enumerate(questions)}
    folds = {}
    for fold in (1, 2):
        texts = (normalize_question(r.question) for r in load_fold(fold, data_dir))
        folds[fold] = sorted(position[t] for t in texts if t in position)
    return folds


def select(candidates: list[Setting], tune: list[int]) -> Setting | None:
    """The candidate with the best mean of MC1 and MC2 on the ``tune`` questions, among
    those evaluated on all of them (None if any candidate is not yet evaluated there)."""
    if not candidates or not all(c.covers(tune) for c in candidates):
        return None
    return max(candidates, key=lambda c: tuning_criterion({m: c.mean(m, tune) for m in METRICS}))
