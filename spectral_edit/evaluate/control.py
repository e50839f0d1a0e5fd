"""General-capability control tasks: log-likelihood multiple choice
(:mod:`spectral_edit.evaluate.choice`) and GSM8K (:mod:`spectral_edit.evaluate.gsm8k`),
run by name from a data directory."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from torch import nn
from transformers import PreTrainedTokenizerBase

from ..data.control import CONTROL_TASKS, ChoiceItem, GSM8KItem, load_control_task
from ..demos.prompts import PLAIN, PromptFormat
from .choice import ChoiceTaskResult, evaluate_choice_task
from .gsm8k import GSM8KResult, evaluate_gsm8k
from .readout import FINAL, FinalLayerReadout, Readout
from .results import write_summary

__all__ = ["ControlResult", "SkippedTask", "evaluate_control"]


@dataclass(frozen=True)
class SkippedTask:
    """A task that was not run, and why (e.g. GSM8K under a readout that cannot generate)."""

    task: str
    reason: str

    @property
    def summary(self) -> dict[str, Any]:
        """``{"task": name, "skipped": reason}``."""
        return {"task": self.task, "skipped": self.reason}

    @property
    def per_item(self) -> list[dict[str, Any]]:
        """No records."""
        return []


TaskResult = ChoiceTaskResult | GSM8KResult | SkippedTask


@dataclass(frozen=True)
class ControlResult:
    """The results of :func:`evaluate_control`, one per task in the order asked for.

    Invariant: ``average`` is over the :class:`ChoiceTaskResult` entries only (GSM8K is
    scored by exact match, a skipped task has no score).
    """

    results: dict[str, TaskResult]
    seconds: float

    @property
    def tasks(self) -> dict[str, dict[str, Any]]:
        """``{task: summary}`` (:class:`ChoiceTaskResult` / :class:`GSM8KResult` summaries)."""
        return {name: result.summary for name, result in self.results.items()}

    @property
    def per_item(self) -> dict[str, list[dict[str, Any]]]:
        """``{task: per-item records}`` (``[]`` for a skipped task)."""
        return {name: result.per_item for name, result in self.results.items()}

    @property
    def average(self) -> dict[str, Any]:
        """``{"acc": unweighted mean acc (percent) of the multiple-choice tasks or None,
        "tasks": their names}``."""
        accs = {
            name: float(result.summary["acc"])
            for name, result in self.results.items()
            if isinstance(result, ChoiceTaskResult)
        }
        mean = sum(accs.values()) / len(accs) if accs else None
        return {"acc": mean, "tasks": list(accs)}

    @property
    def summary(self) -> dict[str, Any]:
        """``{"tasks": ..., "average": ..., "seconds": total}``: what ``summary.json`` holds."""
        return {"tasks": self.tasks, "average": self.average, "seconds": self.seconds}

    def write(
        self, folder: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None
    ) -> Path:
        """Write :attr:`summary` (plus ``metadata``) to ``folder/summary.json``."""
        return write_summary(folder, self.summary, metadata)


def evaluate_control(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    tasks: Sequence[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    offset: int = 0,
    batch_size: int = 16,
    readout: Readout = FINAL,
    progress: bool = False,
    prompt_format: PromptFormat = PLAIN,
) -> ControlResult:
    """Run the named control tasks (:data:`~spectral_edit.data.control.CONTROL_TASKS` keys).

    Files are found with :func:`~spectral_edit.data.locate.resolve` under ``data_dir``
    (``control/<file>.jsonl``). ``limit`` keeps the first ``limit`` items of each
    multiple-choice task and the first ``limit`` evaluated GSM8K items (after its 5
    default exemplars are set aside); ``offset`` first skips that many items of each
    multiple-choice task (items ``[offset, offset + limit)``: disjoint item sets for
    tuning and reporting; GSM8K takes no offset). GSM8K uses :func:`evaluate_gsm8k`'s
    defaults.
    ``readout`` scores the multiple-choice tasks; GSM8K is generated with the model's own
    head, so under another readout (DoLa) it is a :class:`SkippedTask`. ``prompt_format``
    puts the multiple-choice tasks' contexts in a chat template
    (:func:`~spectral_edit.evaluate.choice.choice_requests`); GSM8K's few-shot prompt
    stays plain (a :class:`SkippedTask` under a template).

    Raises:
        KeyError: an unknown task name (checked before anything runs).
        ValueError: no tasks, a task named twice, or GSM8K with ``offset > 0``.
        DataFileMissing / DataFormatError: from loading.
    """
    if not tasks:
        raise ValueError("evaluate_control: no tasks")
    unknown = [t for t in tasks if t not in CONTROL_TASKS]
    if unknown:
        raise KeyError(f"unknown control task(s) {unknown}; known: {sorted(CONTROL_TASKS)}")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"evaluate_control: a task is named twice in {list(tasks)}")
    if offset and "gsm8k" in tasks:
        raise ValueError("evaluate_control: GSM8K takes no offset (its exemplars come first)")
    started = time.perf_counter()
    results: dict[str, TaskResult] = {}
    for name in tasks:
        label = name if progress else False
        if name == "gsm8k" and not isinstance(readout, FinalLayerReadout):
            reason = f"generation with the {readout.name} readout is not supported"
            results[name] = SkippedTask(name, reason)
        elif name == "gsm8k" and prompt_format.is_chat:
            reason = "its few-shot prompt is not put in a chat template"
            results[name] = SkippedTask(name, reason)
        elif name == "gsm8k":
            # the task name decides the item type (CONTROL_TASKS' loader)
            gsm_items = cast(list[GSM8KItem], load_control_task(name, data_dir))
            results[name] = evaluate_gsm8k(
                model, tokenizer, gsm_items, limit=limit, batch_size=batch_size, progress=label
            )
        else:
            choice_items = cast(
                list[ChoiceItem], load_control_task(name, data_dir, limit=limit, offset=offset)
            )
            results[name] = evaluate_choice_task(
                model,
                tokenizer,
                choice_items,
                batch_size=batch_size,
                readout=readout,
                progress=label,
                prompt_format=prompt_format,
            )
    return ControlResult(results, time.perf_counter() - started)
