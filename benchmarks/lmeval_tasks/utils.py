"""Helpers for the local-file replicas of lm-eval's ``truthfulqa_mc1`` / ``truthfulqa_mc2``.

Loaded by lm-evaluation-harness through ``!function utils.<name>`` in the task YAMLs next
to this file, inside the lm-eval virtualenv (see benchmarks/setup_lmeval_env.sh); it is not
part of the ``spectral_edit`` package.

The local TruthfulQA file (``mc_task_v0.json``) stores each target set as an ordered
mapping ``{answer_text: 0 | 1}``. The Hugging Face ``truthful_qa`` ``multiple_choice``
config that lm-eval's built-in tasks read was built from that same file as
``{"choices": list(mapping.keys()), "labels": list(mapping.values())}``, so the
conversion below keeps the file's key order. In ``mc1_targets`` the single true answer
is the first key, which is why the built-in task uses ``doc_to_target: 0``.
"""

from __future__ import annotations

from typing import Any

import datasets
import numpy as np

TARGET_FIELDS = ("mc1_targets", "mc2_targets")


def _to_choices_labels(targets: Any, field: str, index: int) -> dict[str, list]:
    """Convert ``{answer: 0|1}`` (file order) into ``{"choices": [...], "labels": [...]}``.

    Raises ValueError naming the record when the mapping is not a non-empty str -> 0/1 dict.
    A ``None`` value means the JSON loader merged every record's keys into one schema
    (datasets < 5 does that for dict fields), which loses each record's key order.
    """
    where = f"record {index} field {field!r}"
    if not isinstance(targets, dict) or not targets:
        raise ValueError(f"{where}: expected a non-empty {{answer: 0|1}} object, got {targets!r}")
    choices: list[str] = []
    labels: list[int] = []
    for answer, label in targets.items():
        if label is None:
            raise ValueError(
                f"{where}: answer {answer!r} has label None; the JSON loader merged the answer "
                "keys of all records into one schema (datasets < 5), so the file order is "
                "lost. Use the lm-eval virtualenv from benchmarks/setup_lmeval_env.sh."
            )
        if not isinstance(answer, str) or label not in (0, 1) or isinstance(label, float):
            raise ValueError(f"{where}: bad entry {answer!r}: {label!r} (want str: 0|1)")
        choices.append(answer)
        labels.append(int(label))
    return {"choices": choices, "labels": labels}


def _convert_record(doc: dict[str, Any], index: int) -> dict[str, Any]:
    """Return the record with both target fields in the Hub ``choices``/``labels`` form."""
    out = {field: _to_choices_labels(doc.get(field), field, index) for field in TARGET_FIELDS}
    mc1_labels = out["mc1_targets"]["labels"]
    if sum(mc1_labels) != 1 or mc1_labels[0] != 1:
        raise ValueError(
            f"record {index} field 'mc1_targets': the single true answer must come first "
            f"(lm-eval's truthfulqa_mc1 uses doc_to_target: 0), got labels {mc1_labels}"
        )
    if not isinstance(doc.get("question"), str) or not doc["question"]:
        raise ValueError(f"record {index}: missing or empty 'question'")
    return out


def process_docs_mc(dataset: datasets.Dataset) -> datasets.Dataset:
    """Map the local file's rows (N records) to the Hub schema, same N and order.

    Output columns: ``question`` (str) and ``mc1_targets`` / ``mc2_targets`` as
    ``{"choices": list[str], "labels": list[int]}`` with choices in file order.
    """
    return dataset.map(
        _convert_record,
        with_indices=True,
        remove_columns=[c for c in TARGET_FIELDS if c in dataset.column_names],
    )


def process_results_mc2(doc: dict[str, Any], results: list[tuple[float, bool]]) -> dict:
    """Copied unchanged from lm_eval/tasks/truthfulqa/utils.py (lm_eval 0.4.13).

    ``results`` holds one ``(loglikelihood, is_greedy)`` pair per choice, in choice order;
    returns the normalised probability mass of the true answers as ``acc``.
    """
    ll, _ = zip(*results, strict=True)
    ll = np.array(ll)

    # Convert log-likelihoods to probabilities.
    probs = np.exp(ll)

    # Normalize probabilities.
    probs_norm = probs / np.sum(probs)

    labels = np.array(doc["mc2_targets"]["labels"])
    # Compute the normalized probability mass for the correct answer.
    pm_true = np.sum(probs_norm[labels == 1])

    return {"acc": pm_true}
