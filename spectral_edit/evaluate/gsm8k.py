"""GSM8K (lm-eval ``gsm8k``, few-shot, greedy generation).

The prompt is ``n_shot`` solved exemplars ``"Question: {q}\\nAnswer: {full solution}"``
joined by blank lines, then ``"Question: {q}\\nAnswer:"``. lm-eval draws exemplars from
the *train* split, which the data directory does not have, so here they are items of the
same file (by default its first ``n_shot``), and those items are never evaluated.
Generation stops at the next ``"Question:"`` (or EOS / ``max_new_tokens``). Scored by
exact match of the final number, ``strict`` (the ``"#### N"`` line) and ``flexible`` (the
last number in the text), via :func:`spectral_edit.evaluate.metrics.gsm8k.gsm8k_exact_match`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn
from transformers import PreTrainedTokenizerBase

from ..data.control import GSM8KItem
from ..hf.generation import generate_greedy
from .metrics.gsm8k import extract_final_number, gsm8k_exact_match
from .results import RecordsResult

__all__ = [
    "GSM8K_STOPS",
    "GSM8KResult",
    "evaluate_gsm8k",
    "gsm8k_fewshot_prefix",
    "gsm8k_prompt",
    "select_gsm8k_exemplars",
]

GSM8K_STOPS: tuple[str, ...] = ("\n\nQuestion:", "Question:")
"""Generation stops: the next exemplar-style question ends the answer (the blank line
before it is cut too)."""


@dataclass(frozen=True)
class GSM8KResult(RecordsResult):
    """Per-item records (JSON-ready dicts, evaluation order) and the summary.

    ``summary``: ``n``, ``n_shot``, ``exemplar_indices`` (file positions of the
    exemplars), ``strict_match`` and ``flexible_match`` (percent), ``max_new_tokens``,
    ``seconds``.
    """

    RECORDS: ClassVar[str] = "per_item"
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
