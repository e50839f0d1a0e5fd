"""TruthfulQA generation (judge-free), lm-evaluation-harness ``truthfulqa_gen`` protocol.

Prompt (lm-eval's ``doc_to_text``): the QA primer, a blank line, ``"Q: " + question``
(stripped) -- with no ``"\\nA:"``, so the model writes ``"\\nA: ..."`` itself. Greedy
generation stops at the first blank line (lm-eval's ``until: ["\\n\\n"]``, the default
few-shot delimiter), EOS or ``max_new_tokens``; the completion is cut before the stop and
otherwise kept as generated (lm-eval does not strip it), and is what BLEU/ROUGE score
(:mod:`spectral_edit.evaluate.metrics.truthfulqa_gen`). The records also hold the cleaned
answer (:func:`~.metrics.truthfulqa_gen.clean_answer`) that decides informativeness.

lm-eval generates up to 256 tokens; ``max_new_tokens`` defaults to 64 here (answers of
the primer's style are one sentence). Pass 256 for lm-eval's cap.

Under a chat template (``prompt_format``) the prompt is the question as the user turn,
with the generation prompt (no primer, no ``"Q: "``); the stops are the same.

The editor, if any, is applied by the caller (``with editor.apply(model): ...``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn
from transformers import PreTrainedTokenizerBase

from ..data.truthfulqa import QA_PRIMER, TruthfulQARow
from ..demos.prompts import PLAIN, PromptFormat
from ..hf.generation import generate_greedy
from .metrics.truthfulqa_gen import (
    clean_answer,
    gen_scores,
    is_informative,
    mean_gen_scores,
    reference_answers,
)
from .results import RecordsResult

__all__ = [
    "TRUTHFULQA_GEN_STOPS",
    "TruthfulQAGenResult",
    "evaluate_truthfulqa_gen",
    "truthfulqa_gen_prompt",
]

TRUTHFULQA_GEN_STOPS: tuple[str, ...] = ("\n\n",)
"""lm-eval's ``until`` for ``truthfulqa_gen`` (its default, the few-shot delimiter); EOS
ends a generation too."""


def truthfulqa_gen_prompt(question: str, prompt_format: PromptFormat = PLAIN) -> str:
    """lm-eval's ``truthfulqa_gen`` prompt: ``QA_PRIMER + "\\n\\nQ: " + question.strip()``
    (unlike :func:`~spectral_edit.demos.prompts.qa_prompt`, no ``"\\nA:"``); under a chat
    template the stripped question as the user turn."""
    question = question.strip()
    return prompt_format.prompt(f"{QA_PRIMER}\n\nQ: {question}", question)


@dataclass(frozen=True)
class TruthfulQAGenResult(RecordsResult):
    """Per-question records and the summary of :func:`evaluate_truthfulqa_gen`.

    ``per_question`` (input order): ``question, category, completion`` (as scored),
    ``answer`` (cleaned), ``informative`` (bool) and the twelve lm-eval metrics
    (``bleu_max, bleu_acc, bleu_diff, rouge1_*, rouge2_*, rougeL_*``; ``*_acc`` 0/1,
    the others on the 0-100 scale, as lm-eval computes them per document).

    ``summary``: ``n``, the means of the twelve metrics -- ``*_acc`` in **percent**
    (lm-eval reports a 0-1 fraction), ``*_max`` / ``*_diff`` on the 0-100 BLEU/ROUGE
    scale as lm-eval --, ``info`` (percent informative), ``max_new_tokens``,
    ``generation_seconds`` and ``seconds`` (total).
    """

    RECORDS: ClassVar[str] = "per_question"
    per_question: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)


def evaluate_truthfulqa_gen(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[TruthfulQARow],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    progress: bool | str = False,
    prompt_format: PromptFormat = PLAIN,
) -> TruthfulQAGenResult:
    """Greedy answers to ``rows`` (``TruthfulQA.csv`` rows), scored per question as lm-eval's
    ``truthfulqa_gen`` scores them (module docstring).

    Raises:
        ValueError: no rows, or a row without a non-empty incorrect answer.
    """
    if not rows:
        raise ValueError("evaluate_truthfulqa_gen: no questions")
    started = time.perf_counter()
    references = [reference_answers(r.correct_answers, r.incorrect_answers) for r in rows]
    completions = generate_greedy(
        model,
        tokenizer,
        [truthfulqa_gen_prompt(r.question, prompt_format) for r in rows],
        max_new_tokens=max_new_tokens,
        stops=TRUTHFULQA_GEN_STOPS,
        batch_size=batch_size,
        progress="TruthfulQA gen" if progress is True else progress,
    )
    generated = time.perf_counter()
    per_question: list[dict[str, Any]] = []
    for row, completion, (true_refs, false_refs) in zip(rows, completions, references, strict=True):
        per_question.append(
            {
                "question": row.question,
                "category": row.category,
                "completion": completion,
                "answer": clean_answer(completion),
                "informative": is_informative(completion),
                **gen_scores(completion, true_refs, false_refs),
            }
        )
    summary: dict[str, Any] = {
        **mean_gen_scores(per_question),
        "max_new_tokens": max_new_tokens,
        **prompt_format.record(),
        "generation_seconds": generated - started,
        "seconds": time.perf_counter() - started,
    }
    return TruthfulQAGenResult(per_question, summary)
