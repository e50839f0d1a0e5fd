"""Held-out splits and question subsets, the same for the CLI, the experiments and the
benchmarks.

BBQ: items that share ``(category, question_index)`` are instances of one hand-written
template (the same scenario with different names, polarities and context conditions), so a
demonstration and an evaluation item from one template would be near-duplicates;
:func:`split_bbq_items` splits by template, so evaluation never sees a demonstration's
template. TruthfulQA: the SEA authors' two folds (:func:`truthfulqa_questions`).
"""

from __future__ import annotations

import os
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Literal

from ..core.options import check_limit
from .bbq import BBQItem, load_bbq_dir
from .locate import resolve
from .truthfulqa import (
    MCQuestion,
    TruthfulQARow,
    load_fold,
    load_mc_task,
    load_truthfulqa_csv,
    normalize_question,
    split_mc_by_fold,
)

BBQ_MAX_PER_TEMPLATE = 20
"""Demonstrations drawn from one BBQ template at most in :func:`bbq_split` (spreads the
demonstrations over more templates)."""

GroupBy = Literal["template", "item"]
"""Split unit: ``"template"`` = ``(category, question_index)``; ``"item"`` = one item,
``(category, example_id)`` (example ids restart in every category file)."""


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


def bbq_split(
    n_demo: int, seed: int, data_dir: str | os.PathLike[str] | None = None
) -> tuple[list[BBQItem], list[BBQItem]]:
    """``(demonstration items, held-out items)`` of the official BBQ files: the split of
    ``sea demos bbq --n N --seed S`` and ``sea eval bbq --held-out-from N --seed S``
    (by template, at most :data:`BBQ_MAX_PER_TEMPLATE` demonstrations per template)."""
    folder = resolve("bbq/official/Age.jsonl", data_dir).parent
    items = load_bbq_dir(folder)
    return split_bbq_items(items, n_demo, seed=seed, max_per_group=BBQ_MAX_PER_TEMPLATE)


def truthfulqa_questions(
    mc_file: str = "mc_task_v0.json",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    fold: int | None = None,
    limit: int | None = None,
) -> list[MCQuestion]:
    """TruthfulQA multiple-choice questions of ``mc_file``: all of them, or those of SEA
    fold 1 or 2; the first ``limit`` (``None`` = all)."""
    check_limit("limit", limit)
    questions = load_mc_task(resolve(f"truthfulqa/{mc_file}", data_dir))
    if fold is not None:
        questions = split_mc_by_fold(questions, load_fold(fold, data_dir))
    return questions if limit is None else questions[:limit]


def truthfulqa_rows(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    fold: int | None = None,
    limit: int | None = None,
) -> list[TruthfulQARow]:
    """Rows of ``truthfulqa/TruthfulQA.csv`` (the generation task's questions and
    references): all of them, or those whose question is in SEA fold 1 or 2 (CSV order
    kept); the first ``limit`` (``None`` = all). The same selection as
    :func:`truthfulqa_questions` makes of the multiple-choice questions."""
    check_limit("limit", limit)
    rows = load_truthfulqa_csv(resolve("truthfulqa/TruthfulQA.csv", data_dir))
    if fold is not None:
        wanted = {normalize_question(r.question) for r in load_fold(fold, data_dir)}
        rows = [r for r in rows if normalize_question(r.question) in wanted]
    return rows if limit is None else rows[:limit]


def truthfulqa_folds(
    mc_file: str = "mc_task_v0.json",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    per_fold: int | None = None,
) -> dict[int, list[MCQuestion]]:
    """``{1: fold-1 questions, 2: fold-2 questions}``, the first ``per_fold`` of each."""
    check_limit("per_fold", per_fold)
    questions = load_mc_task(resolve(f"truthfulqa/{mc_file}", data_dir))
    return {
        fold: split_mc_by_fold(questions, load_fold(fold, data_dir))[:per_fold] for fold in (1, 2)
    }
