"""Log-likelihood multiple-choice tasks (the control tasks but GSM8K), lm-evaluation-harness
conventions.

Every candidate of a :class:`~spectral_edit.data.control.ChoiceItem` is scored by the
**summed** log-probability of its continuation given its context (the prompts and leading
spaces are built by the loaders in :mod:`spectral_edit.data.control`). ``acc`` takes the
arg-max of the sums; ``acc_norm`` divides each sum by the candidate's length in characters
*without* the one leading space the loader added (lm-eval measures ``doc_to_choice``
strings before the target delimiter is prepended; a choice that itself began with
whitespace is off by one here). Winogrande-style items (several contexts, one
continuation) report ``acc`` only, as lm-eval does: there every candidate has the same
continuation. Under a chat template (``prompt_format``) each context is the user turn and
each continuation follows the generation prompt without the loader's leading space
(:meth:`~spectral_edit.demos.prompts.PromptFormat.continuation`); ``acc_norm`` lengths
are the same either way.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn
from transformers import PreTrainedTokenizerBase

from ..data.control import ChoiceItem
from ..demos.prompts import PLAIN, PromptFormat
from .metrics.common import argmax_first
from .metrics.multiple_choice import choice_accuracy, choice_lengths
from .readout import FINAL, Readout
from .results import RecordsResult
from .scorer import ChoiceRequest, score_requests

__all__ = ["ChoiceTaskResult", "choice_requests", "evaluate_choice_task"]


@dataclass(frozen=True)
class ChoiceTaskResult(RecordsResult):
    """Per-item records (JSON-ready dicts, input order) and the summary.

    ``summary``: ``task`` (the items' task name, or ``None`` if they are mixed), ``n``,
    ``acc`` and ``acc_norm`` (percent; ``acc_norm`` is ``None`` for Winogrande-style
    items) and ``seconds``.
    """

    RECORDS: ClassVar[str] = "per_item"
    per_item: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)


def choice_requests(
    items: Sequence[ChoiceItem], prompt_format: PromptFormat = PLAIN
) -> tuple[list[ChoiceRequest], list[list[int]]]:
    """Scorer requests for ``items`` (in ``prompt_format``) and, per item, the request
    index of each candidate.

    A single-context item is one request with all its continuations; a multi-context
    (Winogrande-style) item gives one request per ``(context, continuation)`` pair.
    Candidate ``j`` of item ``i`` is continuation ``0`` of request ``index[i][j]`` for a
    multi-context item, and continuation ``j`` of request ``index[i][0]`` otherwise.
    """
    requests: list[ChoiceRequest] = []
    index: list[list[int]] = []

    def request(context: str, continuations: Sequence[str]) -> ChoiceRequest:
        return ChoiceRequest(
            prompt_format.prompt(context, context.strip()),
            tuple(prompt_format.continuation(c) for c in continuations),
        )

    for item in items:
        if len(item.contexts) == 1:
            index.append([len(requests)])
            requests.append(request(item.contexts[0], item.continuations))
        else:
            index.append(list(range(len(requests), len(requests) + len(item.contexts))))
            requests.extend(request(ctx, (cont,)) for ctx, cont in item.pairs)
    return requests, index


def _choice_text(continuation: str) -> str:
    """The choice as lm-eval measures it: without the one leading space the loader added."""
    return continuation[1:] if continuation.startswith(" ") else continuation


def evaluate_choice_task(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[ChoiceItem],
    *,
    batch_size: int = 16,
    shared_prefix: str | None = None,
    readout: Readout = FINAL,
    progress: bool | str = False,
    prompt_format: PromptFormat = PLAIN,
) -> ChoiceTaskResult:
    """``acc`` / ``acc_norm`` of a multiple-choice task (lm-eval definitions, percent).

    ``shared_prefix`` is passed to the scorer (e.g. few-shot examples every context
    starts with; under a chat template the template's text before the user turn is used
    instead). ``prompt_format``: plain, or a chat template (module docstring).
    Per-item record keys: ``index, gold, logprobs`` (sums, one per
    candidate), ``n_tokens, predicted, correct`` and, for single-context items,
    ``lengths, predicted_norm, correct_norm``.

    Raises:
        ValueError: ``items`` is empty, or mixes single- and multi-context items.
    """
    if not items:
        raise ValueError("evaluate_choice_task: no items")
    multi = {len(item.contexts) > 1 for item in items}
    if len(multi) > 1:
        raise ValueError("evaluate_choice_task: items mix single- and multi-context formats")
    is_multi = multi.pop()
    tasks = sorted({item.task for item in items})
    task = tasks[0] if len(tasks) == 1 else None
    started = time.perf_counter()
    requests, index = choice_requests(items, prompt_format)
    scored = score_requests(
        model,
        tokenizer,
        requests,
        shared_prefix=prompt_format.shared_prefix(shared_prefix),
        batch_size=batch_size,
        readout=readout,
        progress=(task or "choice") if progress is True else progress,
    )
    per_item: list[dict[str, Any]] = []
    all_lls: list[list[float]] = []
    all_lengths: list[list[int]] = []
    for i, (item, where) in enumerate(zip(items, index, strict=True)):
        scores = [scored[r][0] for r in where] if is_multi else scored[where[0]]
        lls = [s.logprob for s in scores]
        predicted = argmax_first(lls)
        record: dict[str, Any] = {
            "index": i,
            "gold": item.gold,
            "logprobs": lls,
            "n_tokens": [s.n_tokens for s in scores],
            "predicted": predicted,
            "correct": predicted == item.gold,
        }
        if not is_multi:
            lengths = choice_lengths([_choice_text(c) for c in item.continuations])
            predicted_norm = argmax_first([ll / n for ll, n in zip(lls, lengths, strict=True)])
            record.update(
                lengths=lengths,
                predicted_norm=predicted_norm,
                correct_norm=predicted_norm == item.gold,
            )
            all_lengths.append(lengths)
        all_lls.append(lls)
        per_item.append(record)
    metrics = choice_accuracy(
        all_lls, [item.gold for item in items], None if is_multi else all_lengths
    )
    summary = {"task": task, **metrics, "seconds": time.perf_counter() - started}
    return ChoiceTaskResult(per_item, summary)
