"""What a method costs at inference: TruthfulQA scoring time under the method against the
unedited model, timed back to back in one process, per scored token."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from ..data.truthfulqa import QA_PRIMER, MCQuestion
from ..demos.prompts import PLAIN, PromptFormat, qa_prompt
from ..evaluate.truthfulqa import evaluate_truthfulqa
from ..hf.tokens import encode, encode_pair
from .methods import Intervention

OVERHEAD_REPEATS = 2
"""Each timing is the fastest of this many runs."""


def tokens_processed(
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[MCQuestion],
    prompt_format: PromptFormat = PLAIN,
) -> int:
    """Tokens the scorer runs for these questions (in ``prompt_format``) beyond the
    shared prefix (the primer, or the template's text before the user turn): each
    question's own context tokens once, plus every answer's tokens."""
    shared = prompt_format.shared_prefix(QA_PRIMER)
    prefix = len(encode(tokenizer, shared)) if shared else 0
    total = 0
    for q in questions:
        prompt = qa_prompt(q.question, prompt_format)
        answers = dict.fromkeys((*q.mc1_answers, *q.mc2_answers))
        context, _ = encode_pair(tokenizer, prompt, prompt_format.continuation(" x"))
        total += max(len(context) - prefix, 0)
        total += sum(
            len(encode_pair(tokenizer, prompt, prompt_format.continuation(" " + a))[1])
            for a in answers
        )
    return total


@dataclass(frozen=True)
class OverheadTiming:
    """Scoring ``questions`` questions (``tokens`` tokens, :func:`tokens_processed`)
    unedited and under the method, in seconds."""

    questions: int
    tokens: int
    seconds_unedited: float
    seconds_method: float

    @property
    def ms_per_token(self) -> float:
        """Extra milliseconds per scored token under the method."""
        return 1000 * (self.seconds_method - self.seconds_unedited) / self.tokens

    @property
    def percent(self) -> float:
        """Extra scoring time under the method, in percent of the unedited time."""
        return 100 * (self.seconds_method - self.seconds_unedited) / self.seconds_unedited

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OverheadTiming:
        return cls(
            int(data["questions"]),
            int(data["tokens"]),
            float(data["seconds_unedited"]),
            float(data["seconds_method"]),
        )


def measure_overhead(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    intervention: Intervention,
    questions: Sequence[MCQuestion],
    batch_size: int,
    prompt_format: PromptFormat = PLAIN,
) -> OverheadTiming:
    """Time ``questions`` (in ``prompt_format``) unedited and under ``intervention``,
    alternately, the fastest of :data:`OVERHEAD_REPEATS` runs each."""

    def timed(chosen: Intervention) -> float:
        started = time.perf_counter()
        with chosen.applied(model):
            evaluate_truthfulqa(
                model,
                tokenizer,
                questions,
                batch_size=batch_size,
                readout=chosen.readout,
                prompt_format=prompt_format,
            )
        return time.perf_counter() - started

    plain, edited = [], []
    for _ in range(OVERHEAD_REPEATS):
        plain.append(timed(Intervention()))
        edited.append(timed(intervention))
    tokens = tokens_processed(tokenizer, questions, prompt_format)
    return OverheadTiming(len(questions), tokens, min(plain), min(edited))
