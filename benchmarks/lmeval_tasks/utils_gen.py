"""Helpers for the local-file replica of lm-eval's ``truthfulqa_gen`` (sea_truthfulqa_gen.yaml).

Loaded by lm-evaluation-harness through ``!function utils_gen.<name>`` inside the lm-eval
virtualenv (benchmarks/setup_lmeval_env.sh); not part of the ``spectral_edit`` package.

lm-eval's built-in task reads the Hugging Face ``truthful_qa`` ``generation`` config, which
the dataset script built from upstream ``TruthfulQA.csv``: one record per CSV row that has
both answer lists, ``{type, category, question, best_answer, correct_answers,
incorrect_answers, source}``, each list the cell stripped, split on ``";"`` and each piece
stripped (empty pieces kept). :func:`process_docs_gen_csv` rebuilds exactly that from the
local CSV (read with ``na_filter: false`` so no cell turns into NaN) and then applies
lm-eval's OWN ``process_docs_gen`` (imported, not copied); ``process_results_gen`` is
lm-eval's own function too.
"""

from __future__ import annotations

from typing import Any

import datasets
from lm_eval.tasks.truthfulqa import utils as lmeval_truthfulqa

process_results_gen = lmeval_truthfulqa.process_results_gen
"""lm-eval's own ``truthfulqa_gen`` scoring (BLEU / ROUGE max, acc, diff), unchanged."""

CSV_COLUMNS = {
    "Type": "type",
    "Category": "category",
    "Question": "question",
    "Best Answer": "best_answer",
    "Correct Answers": "correct_answers",
    "Incorrect Answers": "incorrect_answers",
    "Source": "source",
}
LIST_COLUMNS = ("correct_answers", "incorrect_answers")


def _split_csv_list(cell: str, delimiter: str = ";") -> list[str]:
    """The Hugging Face dataset script's list split: strip, split, strip each piece."""
    return [item.strip() for item in cell.strip().split(delimiter)]


def _hub_record(row: dict[str, Any]) -> dict[str, Any]:
    """One CSV row (BOM-free column names) as a Hub ``generation`` record."""
    out: dict[str, Any] = {}
    for column, field in CSV_COLUMNS.items():
        value = row[column]
        if not isinstance(value, str):
            raise ValueError(f"column {column!r} is {value!r}, expected a string")
        out[field] = _split_csv_list(value) if field in LIST_COLUMNS else value
    return out


def process_docs_gen_csv(dataset: datasets.Dataset) -> datasets.Dataset:
    """Local ``TruthfulQA.csv`` rows -> Hub ``generation`` records -> lm-eval's own
    ``process_docs_gen`` (periods added, "I have no comment." appended, question stripped)."""
    rename = {c: c.lstrip("\ufeff") for c in dataset.column_names if c.startswith("\ufeff")}
    if rename:
        dataset = dataset.rename_columns(rename)
    missing = [c for c in CSV_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(f"TruthfulQA.csv lacks columns {missing}")
    # the dataset script skips rows without references
    dataset = dataset.filter(lambda r: bool(r["Correct Answers"]) and bool(r["Incorrect Answers"]))
    hub = dataset.map(_hub_record, remove_columns=dataset.column_names)
    return lmeval_truthfulqa.process_docs_gen(hub)
