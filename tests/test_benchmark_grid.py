"""The fold protocol behind the published truthfulness grid (benchmarks/grid_rows.py):
rows evaluated on different question subsets merge per setting, and a setting is chosen
only from candidates scored on every tuning question."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from grid_rows import merge_rows, select  # noqa: E402

from spectral_edit.evaluate.metrics.multiple_choice import tuning_criterion  # noqa: E402


def _row(name, index, mc1, mc2, options=None):
    return {
        "name": name,
        "options": options or {},
        "question_index": index,
        "mc1": mc1,
        "mc2": mc2,
        "mc3": mc2,
    }


def test_rows_on_different_folds_merge_into_one_setting() -> None:
    rows = [
        _row("a", [0, 2], [1.0, 0.0], [0.9, 0.1]),
        _row("a", [1, 3], [0.0, 0.0], [0.2, 0.4]),
        # the first grids' rows name no questions: they cover every question in order
        {"name": "b", "options": {}, "mc1": [1, 1, 0, 0], "mc2": [1, 1, 0, 0], "mc3": [0] * 4},
    ]
    settings = merge_rows(rows)
    assert list(settings) == ["a", "b"]
    a = settings["a"]
    assert a.covers([0, 1, 2, 3]) and not a.covers([4])
    assert a.mean("mc2", [0, 1, 2, 3]) == pytest.approx(40.0)
    assert a.mean("mc1", [0, 2]) == pytest.approx(50.0)
    assert settings["b"].mean("mc1", [0, 1]) == pytest.approx(100.0)


def test_selection_uses_only_the_tuning_fold_and_waits_for_every_candidate() -> None:
    tune, test = [0, 1], [2, 3]
    # "good" wins on the tuning questions and loses on the test questions: it must still
    # be chosen (the test fold may not influence the choice)
    good = _row("good", [0, 1, 2, 3], [1, 1, 0, 0], [1, 1, 0, 0])
    bad = _row("bad", [0, 1, 2, 3], [0, 0, 1, 1], [0, 0, 1, 1])
    chosen = select(list(merge_rows([bad, good]).values()), tune)
    assert chosen is not None and chosen.name == "good"
    assert select(list(merge_rows([bad, good]).values()), test).name == "bad"
    # a candidate not yet scored on every tuning question blocks the choice
    partial = _row("partial", [0], [1], [1])
    assert select(list(merge_rows([bad, good, partial]).values()), tune) is None
    assert select([], tune) is None


def test_tuning_criterion_is_the_mean_of_mc1_and_mc2() -> None:
    assert tuning_criterion({"mc1": 20.0, "mc2": 50.0, "mc3": 99.0}) == pytest.approx(35.0)
