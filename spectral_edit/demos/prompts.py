"""Prompts and answer continuations, written once for demonstrations and evaluation alike.

A demonstration's answers and a benchmark's scored continuations are both
:func:`answer_text` (one space, then the stripped answer) appended to the prompt.
"""

from __future__ import annotations

from ..data.bbq import BBQItem
from ..data.truthfulqa import QA_PRIMER

BBQ_PROMPT_FORMAT = "{context}\nQ: {question}\nA:"
"""The BBQ prompt; ``context`` and ``question`` are stripped of surrounding whitespace."""


def answer_text(answer: str) -> str:
    """The continuation appended to a prompt: one space, then the stripped answer."""
    return " " + answer.strip()


def qa_prompt(question: str) -> str:
    """The TruthfulQA-style prompt for a question: primer, blank line, ``Q: ...\\nA:``.

    The question is stripped: on TruthfulQA's ``mc_task_v0.json`` no question has
    surrounding whitespace, so this is lm-evaluation-harness's ``truthfulqa_mc`` prompt
    byte for byte; HaluEval questions sometimes have it, and a demonstration built from
    one must see the same prompt as an evaluation of the same question.
    """
    return f"{QA_PRIMER}\n\nQ: {question.strip()}\nA:"


def bbq_prompt(item: BBQItem) -> str:
    """The prompt of one item (:data:`BBQ_PROMPT_FORMAT`)."""
    return BBQ_PROMPT_FORMAT.format(context=item.context.strip(), question=item.question.strip())


def bbq_continuations(item: BBQItem) -> tuple[str, str, str]:
    """The three scored continuations, :func:`answer_text` of each option, in
    ``ans0..ans2`` order."""
    a, b, c = (answer_text(answer) for answer in item.answers)
    return a, b, c
