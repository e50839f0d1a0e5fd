"""TruthfulQA multiple choice (MC1, MC2, MC3), lm-evaluation-harness protocol.

Prompt: the QA primer, a blank line, ``Q: {question}\\nA:``; each answer is scored by the
summed log-probability of ``" " + answer``. The primer is shared by every question and
cached once; each question is run once and its answers are scored as one batch. Under a
chat template (``prompt_format``) the prompt is the question as the user turn and each
answer follows the generation prompt without the space
(:mod:`spectral_edit.demos.prompts`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn
from transformers import PreTrainedTokenizerBase

from ..data.truthfulqa import QA_PRIMER, MCQuestion
from ..demos.prompts import PLAIN, PromptFormat, qa_prompt
from .metrics.multiple_choice import mc_scores, mean_mc
from .readout import FINAL, Readout
from .results import RecordsResult
from .scorer import ChoiceRequest, score_requests


@dataclass(frozen=True)
class TruthfulQAResult(RecordsResult):
    """Per-question records (JSON-ready dicts) and the summary (percent, n, seconds)."""

    RECORDS: ClassVar[str] = "per_question"
    per_question: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)


def evaluate_truthfulqa(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[MCQuestion],
    *,
    batch_size: int = 16,
    readout: Readout = FINAL,
    progress: bool | str = False,
    prompt_format: PromptFormat = PLAIN,
) -> TruthfulQAResult:
    """Score every MC1 and MC2 answer once (answers in both lists are scored once);
    ``readout`` selects plain or DoLa scoring; ``prompt_format`` the prompts (plain, or a
    chat template; the summary records it)."""
    started = time.perf_counter()
    requests, answer_lists = [], []
    for q in questions:
        answers = tuple(dict.fromkeys((*q.mc1_answers, *q.mc2_answers)))
        answer_lists.append(answers)
        continuations = tuple(prompt_format.continuation(" " + a) for a in answers)
        requests.append(ChoiceRequest(qa_prompt(q.question, prompt_format), continuations))
    scored = score_requests(
        model,
        tokenizer,
        requests,
        shared_prefix=prompt_format.shared_prefix(QA_PRIMER),
        batch_size=batch_size,
        readout=readout,
        progress="TruthfulQA" if progress is True else progress,
    )
    per_question: list[dict[str, Any]] = []
    for q, answers, scores in zip(questions, answer_lists, scored, strict=True):
        by_answer = {a: s.logprob for a, s in zip(answers, scores, strict=True)}
        mc1_ll = [by_answer[a] for a in q.mc1_answers]
        mc2_ll = [by_answer[a] for a in q.mc2_answers]
        metrics = mc_scores(mc1_ll, q.mc1_labels, mc2_ll, q.mc2_labels)
        per_question.append(
            {
                "question": q.question,
                **metrics,
                "mc1_logprobs": mc1_ll,
                "mc2_logprobs": mc2_ll,
            }
        )
    summary = {
        **mean_mc(per_question),
        **prompt_format.record(),
        "seconds": time.perf_counter() - started,
    }
    return TruthfulQAResult(per_question, summary)
