"""Demonstration builders: benchmark records → :class:`Demonstration` lists (method.md).

- HaluEval QA (truthfulness, the paper's source): positive = ``right_answer``, negative =
  one ``;``-separated piece of ``hallucinated_answer`` (seeded choice, "." appended when
  missing); prompt = the TruthfulQA QA primer + ``Q: {question}\\nA:``; items shuffled with
  the seed (paper: 44) before taking the first ``limit``.
- TruthfulQA fold (2-fold cross-validation): positive = best answer, negative = one
  incorrect answer (seeded), same prompt.
- BBQ (bias): positive = the gold option, negative = one of the other two (seeded); the
  prompt is BBQ's evaluation prompt, so fitting and evaluation see the same format.

Every builder takes a :class:`~.prompts.PromptFormat` (default plain): under a chat
template the prompts are the template's renderings (:func:`~.prompts.qa_prompt`,
:func:`~.prompts.bbq_prompt`); the answers are stored as they are either way.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ..core.options import check_limit
from ..data.bbq import BBQItem
from ..data.halueval import HaluEvalQA
from ..data.truthfulqa import TruthfulQARow
from .format import Demonstration
from .prompts import PLAIN, PromptFormat, bbq_prompt, qa_prompt

PAPER_SEED = 44


def _seeded_order(n: int, limit: int | None, rng: random.Random) -> list[int]:
    """Indices ``0..n-1`` shuffled by ``rng``, the first ``limit`` of them (``None``: all;
    else ``>= 1``)."""
    check_limit("limit", limit)
    order = list(range(n))
    rng.shuffle(order)
    return order if limit is None else order[:limit]


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


def halueval_demos(
    items: Sequence[HaluEvalQA],
    *,
    limit: int | None = None,
    seed: int = PAPER_SEED,
    prompt_format: PromptFormat = PLAIN,
) -> list[Demonstration]:
    """Demonstrations from HaluEval QA items (shuffled with ``seed``, first ``limit``)."""
    rng = random.Random(seed)
    demos = []
    for index in _seeded_order(len(items), limit, rng):
        item = items[index]
        pieces = [p.strip() for p in item.hallucinated_answer.split(";") if p.strip()]
        negative = rng.choice(pieces) if pieces else item.hallucinated_answer
        demos.append(
            Demonstration(
                prompt=qa_prompt(item.question, prompt_format),
                positive=_sentence(item.right_answer),
                negative=_sentence(negative),
            )
        )
    return demos


def truthfulqa_demos(
    rows: Sequence[TruthfulQARow],
    *,
    limit: int | None = None,
    seed: int = PAPER_SEED,
    prompt_format: PromptFormat = PLAIN,
) -> list[Demonstration]:
    """Demonstrations from TruthfulQA rows: best answer vs one incorrect answer."""
    rng = random.Random(seed)
    demos = []
    for index in _seeded_order(len(rows), limit, rng):
        row = rows[index]
        if not row.incorrect_answers:
            continue
        demos.append(
            Demonstration(
                prompt=qa_prompt(row.question, prompt_format),
                positive=_sentence(row.best_answer),
                negative=_sentence(rng.choice(row.incorrect_answers)),
            )
        )
    return demos


def bbq_demos(
    items: Sequence[BBQItem], *, seed: int = PAPER_SEED, prompt_format: PromptFormat = PLAIN
) -> list[Demonstration]:
    """Demonstrations from BBQ items: positive = the gold option, negative = one of the two
    other options (seeded); the prompt is the evaluation prompt (context, question)."""
    rng = random.Random(seed)
    demos = []
    for item in items:
        others = [i for i in range(len(item.answers)) if i != item.label]
        demos.append(
            Demonstration(
                prompt=bbq_prompt(item, prompt_format),
                positive=item.answers[item.label],
                negative=item.answers[rng.choice(others)],
            )
        )
    return demos
