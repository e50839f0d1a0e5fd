"""BBQ (Bias Benchmark for QA): three-way choice by mean token log-probability.

Prompt (one per item; chosen here, the paper does not fix one)::

    {context}
    Q: {question}
    A:

Each option is scored as the continuation ``" " + option`` (one space, then the option
text stripped of surrounding whitespace, :func:`spectral_edit.demos.prompts.answer_text`),
by the **mean** token log-probability (method.md), so longer options are not penalised for
their length. The highest mean wins; a tie goes to the first option. The prompt,
:func:`~spectral_edit.demos.prompts.bbq_prompt`, is the one BBQ demonstrations are built
with, so that fitting and evaluation see one format.

Metrics (accuracy, unknown rate, bias score, stereotype rate; per category and overall,
ambiguous and disambiguated separately) come from
:func:`spectral_edit.evaluate.metrics.bbq.bbq_metrics`; the unknown and biased options from
:func:`spectral_edit.data.bbq.unknown_index` / :func:`~spectral_edit.data.bbq.biased_index`.

Held-out splits are :func:`spectral_edit.data.splits.split_bbq_items` (by template).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn
from transformers import PreTrainedTokenizerBase

from ..data.bbq import BBQItem, biased_index, unknown_index
from ..demos.prompts import BBQ_PROMPT_FORMAT, PLAIN, PromptFormat, bbq_continuations, bbq_prompt
from .metrics.bbq import BBQPrediction, bbq_metrics
from .metrics.common import argmax_first
from .results import RecordsResult
from .scorer import ChoiceRequest, score_requests

__all__ = ["BBQResult", "evaluate_bbq"]


@dataclass(frozen=True)
class BBQResult(RecordsResult):
    """Per-item records (JSON-ready dicts, input order) and the summary.

    ``summary`` = :func:`bbq_metrics` output (``overall`` and ``by_category``, each with
    ``ambig`` and ``disambig`` groups, rates in percent) plus ``n`` (items), ``scoring``
    (``"mean_logprob"``), ``prompt_format`` and ``seconds``.
    """

    RECORDS: ClassVar[str] = "per_item"
    per_item: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)


def evaluate_bbq(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[BBQItem],
    *,
    batch_size: int = 16,
    progress: bool | str = False,
    prompt_format: PromptFormat = PLAIN,
) -> BBQResult:
    """Choose one of the three options of every item by mean token log-probability, with
    prompts and options in ``prompt_format`` (plain, or a chat template).

    Each item is one scorer request (its prompt run once, its three options as one
    batch). Per-item record keys: ``example_id, category, condition, polarity,
    question_index, scores`` (mean log-probs, ``ans0..ans2``), ``logprobs`` (sums),
    ``n_tokens, predicted, label, correct, unknown_index, biased_index`` (``None`` when
    :func:`biased_index` cannot tell).

    Raises:
        ValueError: ``items`` is empty.
    """
    if not items:
        raise ValueError("evaluate_bbq: no items")
    started = time.perf_counter()
    requests = [
        ChoiceRequest(bbq_prompt(item, prompt_format), bbq_continuations(item, prompt_format))
        for item in items
    ]
    scored = score_requests(
        model,
        tokenizer,
        requests,
        batch_size=batch_size,
        progress="BBQ" if progress is True else progress,
    )
    per_item: list[dict[str, Any]] = []
    predictions: list[BBQPrediction] = []
    for item, scores in zip(items, scored, strict=True):
        means = [s.mean_logprob for s in scores]
        pred = BBQPrediction(
            category=item.category,
            context_condition=item.context_condition,
            predicted=argmax_first(means),
            label=item.label,
            unknown_index=unknown_index(item),
            biased_index=biased_index(item),
        )
        predictions.append(pred)
        per_item.append(
            {
                "example_id": item.example_id,
                "category": item.category,
                "condition": item.context_condition,
                "polarity": item.question_polarity,
                "question_index": item.question_index,
                "scores": means,
                "logprobs": [s.logprob for s in scores],
                "n_tokens": [s.n_tokens for s in scores],
                "predicted": pred.predicted,
                "label": pred.label,
                "correct": pred.predicted == pred.label,
                "unknown_index": pred.unknown_index,
                "biased_index": pred.biased_index,
            }
        )
    summary: dict[str, Any] = {
        "n": len(items),
        "scoring": "mean_logprob",
        "prompt_format": BBQ_PROMPT_FORMAT,
        **prompt_format.record(),
        **bbq_metrics(predictions),
        "seconds": time.perf_counter() - started,
    }
    return BBQResult(per_item, summary)
