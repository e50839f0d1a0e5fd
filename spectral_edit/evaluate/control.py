"""General-capability control tasks: log-likelihood multiple choice and GSM8K.

Multiple choice (lm-evaluation-harness conventions): every candidate of a
:class:`~spectral_edit.data.control.ChoiceItem` is scored by the **summed** log-probability
of its continuation given its context (the prompts and leading spaces are built by the
loaders in :mod:`spectral_edit.data.control`). ``acc`` takes the arg-max of the sums;
``acc_norm`` divides each sum by the candidate's length in characters *without* the one
leading space the loader added (lm-eval measures ``doc_to_choice`` strings before the
target delimiter is prepended; a choice that itself began with whitespace is off by one
here). Winogrande-style items (several contexts, one continuation) report ``acc`` only,
as lm-eval does: there every candidate has the same continuation.

GSM8K (lm-eval ``gsm8k``, few-shot, greedy): the prompt is ``n_shot`` solved exemplars
``"Question: {q}\\nAnswer: {full solution}"`` joined by blank lines, then
``"Question: {q}\\nAnswer:"``. lm-eval draws exemplars from the *train* split, which the
data directory does not have, so here they are items of the same file (by default its
first ``n_shot``), and those items are never evaluated. Generation stops at the next
``"Question:"`` (or EOS / ``max_new_tokens``). Scored by exact match of the final number,
``strict`` (the ``"#### N"`` line) and ``flexible`` (the last number in the text), via
:func:`spectral_edit.evaluate.metrics.gsm8k_exact_match`.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from ..data.control import CONTROL_TASKS, ChoiceItem, GSM8KItem, load_control_task
from ..hf.generation import generate_greedy
from .metrics import (
    argmax_first,
    choice_accuracy,
    choice_lengths,
    extract_final_number,
    gsm8k_exact_match,
)
from .readout import FINAL, FinalLayerReadout, Readout
from .scorer import ChoiceRequest, score_requests

__all__ = [
    "GSM8K_STOPS",
    "ChoiceTaskResult",
    "GSM8KResult",
    "choice_requests",
    "evaluate_choice_task",
    "evaluate_control",
    "evaluate_gsm8k",
    "gsm8k_fewshot_prefix",
    "gsm8k_prompt",
    "select_gsm8k_exemplars",
]

GSM8K_STOPS: tuple[str, ...] = ("\n\nQuestion:", "Question:")
"""Generation stops: the next exemplar-style question ends the answer (the blank line
before it is cut too)."""


# --------------------------------------------------------------------------- choice tasks


@dataclass(frozen=True)
class ChoiceTaskResult:
    """Per-item records (JSON-ready dicts, input order) and the summary.

    ``summary``: ``task`` (the items' task name, or ``None`` if they are mixed), ``n``,
    ``acc`` and ``acc_norm`` (percent; ``acc_norm`` is ``None`` for Winogrande-style
    items) and ``seconds``.
    """

    per_item: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)


def choice_requests(items: Sequence[ChoiceItem]) -> tuple[list[ChoiceRequest], list[list[int]]]:
    """Scorer requests for ``items`` and, per item, the request index of each candidate.

    A single-context item is one request with all its continuations; a multi-context
    (Winogrande-style) item gives one request per ``(context, continuation)`` pair.
    Candidate ``j`` of item ``i`` is continuation ``0`` of request ``index[i][j]`` for a
    multi-context item, and continuation ``j`` of request ``index[i][0]`` otherwise.
    """
    requests: list[ChoiceRequest] = []
    index: list[list[int]] = []
    for item in items:
        if len(item.contexts) == 1:
            index.append([len(requests)])
            requests.append(ChoiceRequest(item.contexts[0], tuple(item.continuations)))
        else:
            index.append(list(range(len(requests), len(requests) + len(item.contexts))))
            requests.extend(ChoiceRequest(ctx, (cont,)) for ctx, cont in item.pairs)
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
) -> ChoiceTaskResult:
    """``acc`` / ``acc_norm`` of a multiple-choice task (lm-eval definitions, percent).

    ``shared_prefix`` is passed to the scorer (e.g. few-shot examples every context
    starts with). Per-item record keys: ``index, gold, logprobs`` (sums, one per
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
    requests, index = choice_requests(items)
    scored = score_requests(
        model,
        tokenizer,
        requests,
        shared_prefix=shared_prefix,
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


# --------------------------------------------------------------------------- GSM8K


@dataclass(frozen=True)
class GSM8KResult:
    """Per-item records (JSON-ready dicts, evaluation order) and the summary.

    ``summary``: ``n``, ``n_shot``, ``exemplar_indices`` (file positions of the
    exemplars), ``strict_match`` and ``flexible_match`` (percent), ``max_new_tokens``,
    ``seconds``.
    """

    per_item: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)


def gsm8k_prompt(question: str) -> str:
    """The question part of a GSM8K prompt: ``"Question: {q}\\nAnswer:"``."""
    return f"Question: {question.strip()}\nAnswer:"


def gsm8k_fewshot_prefix(exemplars: Sequence[GSM8KItem]) -> str:
    """Solved exemplars, each ``"Question: {q}\\nAnswer: {solution}"``, each followed by a
    blank line; ``""`` for zero-shot. A full prompt is this + :func:`gsm8k_prompt`."""
    return "".join(f"{gsm8k_prompt(e.question)} {e.answer.strip()}\n\n" for e in exemplars)


def select_gsm8k_exemplars(n_items: int, n_shot: int, seed: int | None = None) -> list[int]:
    """Positions of the few-shot exemplars among ``n_items`` items.

    ``seed=None``: the first ``n_shot`` (deterministic, the default); an integer: a
    seeded random sample of ``n_shot`` positions (in sampled order).

    Raises:
        ValueError: ``n_shot < 0`` or ``n_shot >= n_items`` (nothing would be left).
    """
    if n_shot < 0:
        raise ValueError(f"n_shot must be >= 0, got {n_shot}")
    if n_shot >= n_items:
        raise ValueError(
            f"GSM8K: {n_items} items cannot give {n_shot} exemplars and leave any to evaluate"
        )
    if seed is None:
        return list(range(n_shot))
    return random.Random(seed).sample(range(n_items), n_shot)


def evaluate_gsm8k(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[GSM8KItem],
    *,
    n_shot: int = 5,
    limit: int | None = None,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    seed: int | None = None,
    progress: bool | str = False,
) -> GSM8KResult:
    """Few-shot greedy GSM8K with strict and flexible exact match (module docstring).

    Exemplars: :func:`select_gsm8k_exemplars` (``seed=None``: the first ``n_shot`` items
    of ``items``); they are removed from evaluation. ``limit`` then keeps the first
    ``limit`` remaining items. Per-item record keys: ``index`` (position in ``items``),
    ``question, gold, completion, pred_strict, pred_flexible, correct_strict,
    correct_flexible``.

    Raises:
        ValueError: too few items for ``n_shot``, a negative ``limit`` or nothing left
            to evaluate.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    started = time.perf_counter()
    shots = select_gsm8k_exemplars(len(items), n_shot, seed)
    taken = set(shots)
    todo = [i for i in range(len(items)) if i not in taken]
    if limit is not None:
        todo = todo[:limit]
    if not todo:
        raise ValueError("evaluate_gsm8k: no items left to evaluate")
    prefix = gsm8k_fewshot_prefix([items[i] for i in shots])
    prompts = [prefix + gsm8k_prompt(items[i].question) for i in todo]
    completions = generate_greedy(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        stops=GSM8K_STOPS,
        batch_size=batch_size,
        progress="GSM8K" if progress is True else progress,
    )
    golds = [items[i].answer for i in todo]
    per_item = []
    for i, text, gold in zip(todo, completions, golds, strict=True):
        per_item.append(
            {
                "index": i,
                "question": items[i].question,
                "gold": items[i].final,
                "completion": text,
                "pred_strict": extract_final_number(text, "strict"),
                "pred_flexible": extract_final_number(text, "flexible"),
                "correct_strict": gsm8k_exact_match([text], [gold], "strict") == 100.0,
                "correct_flexible": gsm8k_exact_match([text], [gold], "flexible") == 100.0,
            }
        )
    summary = {
        "task": "gsm8k",
        "n": len(todo),
        "n_shot": n_shot,
        "exemplar_indices": shots,
        "strict_match": gsm8k_exact_match(completions, golds, "strict"),
        "flexible_match": gsm8k_exact_match(completions, golds, "flexible"),
        "max_new_tokens": max_new_tokens,
        "seconds": time.perf_counter() - started,
    }
    return GSM8KResult(per_item, summary)


# --------------------------------------------------------------------------- runner


def evaluate_control(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    tasks: Sequence[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    batch_size: int = 16,
    readout: Readout = FINAL,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the named control tasks (:data:`~spectral_edit.data.control.CONTROL_TASKS` keys).

    Files are found with :func:`~spectral_edit.data.locate.resolve` under ``data_dir``
    (``control/<file>.jsonl``). ``limit`` keeps the first ``limit`` items of each
    multiple-choice task and the first ``limit`` evaluated GSM8K items (after its 5
    default exemplars are set aside). GSM8K uses :func:`evaluate_gsm8k`'s defaults.
    ``readout`` scores the multiple-choice tasks; GSM8K is generated with the model's own
    head, so under another readout (DoLa) it is skipped and its summary says so.

    Returns:
        ``{"tasks": {name: summary}, "average": {"acc": mean acc over the
        multiple-choice tasks (unweighted, percent) or None, "tasks": their names},
        "per_item": {name: records}, "seconds": total}``; tasks appear in the given order.

    Raises:
        KeyError: an unknown task name (checked before anything runs).
        ValueError: no tasks, or a task named twice.
        DataFileMissing / DataFormatError: from loading.
    """
    if not tasks:
        raise ValueError("evaluate_control: no tasks")
    unknown = [t for t in tasks if t not in CONTROL_TASKS]
    if unknown:
        raise KeyError(f"unknown control task(s) {unknown}; known: {sorted(CONTROL_TASKS)}")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"evaluate_control: a task is named twice in {list(tasks)}")
    started = time.perf_counter()
    summaries: dict[str, Any] = {}
    records: dict[str, list[dict[str, Any]]] = {}
    choice_accs: dict[str, float] = {}
    for name in tasks:
        label = name if progress else False
        if name == "gsm8k" and not isinstance(readout, FinalLayerReadout):
            summaries[name] = {
                "task": name,
                "skipped": f"generation with the {readout.name} readout is not supported",
            }
            records[name] = []
            continue
        if name == "gsm8k":
            gsm_items = load_control_task(name, data_dir)
            result: ChoiceTaskResult | GSM8KResult = evaluate_gsm8k(
                model, tokenizer, gsm_items, limit=limit, batch_size=batch_size, progress=label
            )
        else:
            choice_items = load_control_task(name, data_dir, limit=limit)
            result = evaluate_choice_task(
                model,
                tokenizer,
                choice_items,
                batch_size=batch_size,
                readout=readout,
                progress=label,
            )
            choice_accs[name] = result.summary["acc"]
        summaries[name] = result.summary
        records[name] = result.per_item
    mean_acc = sum(choice_accs.values()) / len(choice_accs) if choice_accs else None
    return {
        "tasks": summaries,
        "average": {"acc": mean_acc, "tasks": list(choice_accs)},
        "per_item": records,
        "seconds": time.perf_counter() - started,
    }
