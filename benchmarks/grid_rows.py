"""The rows of a truthfulness grid (``grid.jsonl``) and the TruthfulQA folds they cover.

A row is one setting evaluated on a set of questions: ``name``, ``options``, optional
``ranks``, ``question_index`` (positions in ``questions.json``; absent = every question,
the format of the first grids) and per-question ``mc1``/``mc2``/``mc3`` aligned with it.
One setting may have several rows (fold 1 first, fold 2 later); :func:`merge_rows` joins
them into one score table per setting.
The rows are kept in the project's one store
(:class:`spectral_edit.experiments.store.Store`, rows ``grid``); the setting chosen per
fold follows the experiments' fold protocol (:func:`spectral_edit.experiments.folds.
best_on_fold`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from spectral_edit.data import load_fold, normalize_question
from spectral_edit.data.splits import truthfulqa_questions
from spectral_edit.experiments.folds import best_on_fold
from spectral_edit.experiments.store import Store

METRICS = ("mc1", "mc2", "mc3")
ROWS = "grid"
"""The grid's rows in its folder's store: ``grid.jsonl``."""


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


def grid_settings(grid_dir: Path, *, locked: bool = False) -> dict[str, Setting]:
    """Every setting of the grid in ``grid_dir`` (:func:`merge_rows` of its rows);
    ``locked``: read under the store's lock (while shards are appending)."""
    return merge_rows(Store(grid_dir).rows(ROWS, locked=locked))


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
    return [q.question for q in truthfulqa_questions("mc_task_v0.json", data_dir)]


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
    return best_on_fold(candidates, lambda c: {m: c.mean(m, tune) for m in METRICS})
