"""BBQ (Bias Benchmark for QA): three-way choice by mean token log-probability.

Prompt (one per item; chosen here, the paper does not fix one)::

    {context}
    Q: {question}
    A:

Each option is scored as the continuation ``" " + option`` (one space, then the option
text stripped of surrounding whitespace, as :func:`spectral_edit.demos.format.answer_text` builds
demonstration answers), by the **mean** token log-probability (method.md), so longer
options are not penalised for their length. The highest mean wins; a tie goes to the
first option. The same prompt, :func:`bbq_prompt`, should be used to build BBQ
demonstrations so that fitting and evaluation see one format.

Metrics (accuracy, unknown rate, bias score, stereotype rate; per category and overall,
ambiguous and disambiguated separately) come from
:func:`spectral_edit.evaluate.metrics.bbq_metrics`; the unknown and biased options from
:func:`spectral_edit.data.bbq.unknown_index` / :func:`~spectral_edit.data.bbq.biased_index`.

Held-out splits (:func:`split_bbq_items`) are made by *template*: BBQ items that share
``(category, question_index)`` are instances of one hand-written template (the same
scenario with different names, polarities and context conditions), so a demonstration and
an evaluation item from one template would be near-duplicates. Splitting by template
guarantees that evaluation never sees a demonstration's template.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn
from transformers import PreTrainedTokenizerBase

from ..data.bbq import BBQItem, biased_index, unknown_index
from .metrics import BBQPrediction, argmax_first, bbq_metrics
from .scorer import ChoiceRequest, score_requests

__all__ = [
    "BBQ_PROMPT_FORMAT",
    "BBQResult",
    "GroupBy",
    "bbq_continuations",
    "bbq_group_key",
    "bbq_prompt",
    "evaluate_bbq",
    "exclude_demo_groups",
    "split_bbq_items",
]

BBQ_PROMPT_FORMAT = "{context}\nQ: {question}\nA:"
"""The BBQ prompt; ``context`` and ``question`` are stripped of surrounding whitespace."""

GroupBy = Literal["template", "item"]
"""Split unit: ``"template"`` = ``(category, question_index)``; ``"item"`` = one item,
``(category, example_id)`` (example ids restart in every category file)."""


def bbq_prompt(item: BBQItem) -> str:
    """The prompt of one item (:data:`BBQ_PROMPT_FORMAT`)."""
    return BBQ_PROMPT_FORMAT.format(context=item.context.strip(), question=item.question.strip())


def bbq_continuations(item: BBQItem) -> tuple[str, str, str]:
    """The three scored continuations, ``" " + option.strip()``, in ``ans0..ans2`` order."""
    a, b, c = (" " + answer.strip() for answer in item.answers)
    return a, b, c


@dataclass(frozen=True)
class BBQResult:
    """Per-item records (JSON-ready dicts, input order) and the summary.

    ``summary`` = :func:`bbq_metrics` output (``overall`` and ``by_category``, each with
    ``ambig`` and ``disambig`` groups, rates in percent) plus ``n`` (items), ``scoring``
    (``"mean_logprob"``), ``prompt_format`` and ``seconds``.
    """

    per_item: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)


def evaluate_bbq(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[BBQItem],
    *,
    batch_size: int = 16,
    progress: bool | str = False,
) -> BBQResult:
    """Choose one of the three options of every item by mean token log-probability.

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
    requests = [ChoiceRequest(bbq_prompt(item), bbq_continuations(item)) for item in items]
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
        **bbq_metrics(predictions),
        "seconds": time.perf_counter() - started,
    }
    return BBQResult(per_item, summary)


# --------------------------------------------------------------------------- held-out split


def bbq_group_key(item: BBQItem, by: GroupBy = "template") -> tuple[str, str]:
    """The split unit of ``item``: ``(category, question_index)`` or ``(category, id)``."""
    if by == "template":
        return item.category, item.question_index
    if by == "item":
        return item.category, str(item.example_id)
    raise ValueError(f"by must be 'template' or 'item', got {by!r}")


def _groups(items: Iterable[BBQItem], by: GroupBy) -> dict[tuple[str, str], list[BBQItem]]:
    groups: dict[tuple[str, str], list[BBQItem]] = defaultdict(list)
    for item in items:
        groups[bbq_group_key(item, by)].append(item)
    return groups


def split_bbq_items(
    items: Sequence[BBQItem],
    n_demo: int,
    seed: int,
    *,
    by: GroupBy = "template",
    demo_condition: str | None = "disambig",
    max_per_group: int | None = None,
) -> tuple[list[BBQItem], list[BBQItem]]:
    """Seeded held-out split into ``n_demo`` demonstration items and evaluation items.

    Groups (:func:`bbq_group_key`; by default BBQ templates, ``(category,
    question_index)``) are visited in a seeded random order; from each visited group up to
    ``max_per_group`` of its eligible items (context condition ``demo_condition``, the
    paper's disambiguated items by default; ``None`` = any), in a seeded random order,
    become demonstrations until there are ``n_demo``. **Every item of every group that
    gave a demonstration is left out of evaluation** (including its ambiguous items and
    any eligible items not drawn), so no evaluation item shares a group with a
    demonstration. All other groups' items are the evaluation items, in input order.

    Trade-off: whole templates go to one side, so with large templates (upstream BBQ has
    25 per category, up to a few hundred items each) demonstrations come from few
    templates. ``max_per_group`` spreads them over more templates, at the cost of holding
    more templates out of evaluation. ``by="item"`` only keeps the demonstration items
    themselves out of evaluation.

    Invariants: ``len(demo) == n_demo``; ``demo`` and ``eval`` share no group; both are
    determined by ``(items, n_demo, seed, by, demo_condition, max_per_group)``; when
    example ids are unique within a group, reordering ``items`` changes only the order
    of ``eval``.

    Raises:
        ValueError: ``n_demo < 0``, ``max_per_group < 1``, or fewer eligible items than
            ``n_demo`` (the message gives the counts).
    """
    if n_demo < 0:
        raise ValueError(f"n_demo must be >= 0, got {n_demo}")
    if max_per_group is not None and max_per_group < 1:
        raise ValueError(f"max_per_group must be >= 1 or None, got {max_per_group}")
    groups = _groups(items, by)
    rng = random.Random(seed)
    order = sorted(groups)
    rng.shuffle(order)
    demo: list[BBQItem] = []
    held: set[tuple[str, str]] = set()
    for key in order:
        if len(demo) >= n_demo:
            break
        eligible = sorted(
            (
                i
                for i in groups[key]
                if demo_condition is None or i.context_condition == demo_condition
            ),
            key=lambda i: (i.example_id, i.context_condition, i.question_polarity),
        )
        if not eligible:
            continue
        rng.shuffle(eligible)
        cap = len(eligible) if max_per_group is None else max_per_group
        demo.extend(eligible[: min(cap, n_demo - len(demo))])
        held.add(key)
    if len(demo) < n_demo:
        cond = "any condition" if demo_condition is None else f"condition {demo_condition!r}"
        cap_note = "" if max_per_group is None else f" (at most {max_per_group} per group)"
        raise ValueError(
            f"split_bbq_items: asked for {n_demo} demonstrations but only {len(demo)} "
            f"items of {cond} are available{cap_note} among {len(items)} items"
        )
    evaluation = [i for i in items if bbq_group_key(i, by) not in held]
    return demo, evaluation


def exclude_demo_groups(
    items: Sequence[BBQItem], demos: Iterable[BBQItem], *, by: GroupBy = "template"
) -> list[BBQItem]:
    """``items`` without those sharing a group with any of ``demos`` (input order kept).

    For demonstrations taken from another file (e.g. the SEA authors' validation split,
    whose templates recur in the official files).
    """
    taken = {bbq_group_key(d, by) for d in demos}
    return [i for i in items if bbq_group_key(i, by) not in taken]
