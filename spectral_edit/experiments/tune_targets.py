"""What ``sea tune`` maximises: a target scored on a *tuning* part (where α is calibrated)
and a *report* part (held out, where the chosen α is reported), and the data behind it.

- :class:`TruthfulQATarget`: TruthfulQA multiple choice; the tuning value is the mean of
  MC1 and MC2 (:func:`~spectral_edit.evaluate.metrics.multiple_choice.tuning_criterion`,
  as ``sea compare`` selects); tuning part = fold 1, report part = fold 2.
- :class:`BBQTarget`: BBQ accuracy over all items (ambiguous and disambiguated pooled) on
  items held out from the BBQ demonstrations; a probe whose pooled stereotype rate is above
  the unedited model's is infeasible (the harm ``stereotype_points`` = edited minus
  unedited stereotype rate, budget 0).

Summaries are JSON-able dictionaries (stored with the probes); :meth:`value` reads the
tuning value from one, :meth:`harms` the target's own harms against the unedited summary.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from torch import nn
from transformers import PreTrainedTokenizerBase

from ..data.bbq import BBQItem
from ..data.splits import bbq_group_key, bbq_split, truthfulqa_folds
from ..data.truthfulqa import MCQuestion
from ..demos.builders import bbq_demos
from ..demos.format import Demonstration, read_demos
from ..demos.prompts import PLAIN, PromptFormat
from ..evaluate.bbq import evaluate_bbq
from ..evaluate.metrics.common import percent
from ..evaluate.metrics.multiple_choice import tuning_criterion
from ..evaluate.readout import FINAL, FinalLayerReadout, Readout
from ..evaluate.truthfulqa import evaluate_truthfulqa
from .demo_job import load_truthfulness_demos

__all__ = [
    "TARGETS",
    "BBQTarget",
    "Part",
    "Target",
    "TruthfulQATarget",
    "TuneData",
    "load_tune_data",
    "split_bbq_tuning",
]

Part = Literal["tune", "report"]
TARGETS = ("truthfulqa", "bbq")
STEREOTYPE_HARM = "stereotype_points"


class Target(Protocol):
    """A target: ``name``, the held-out metrics the report shows (``headline``, keys of a
    summary, percent), the one the plot's gain uses (``gain_metric``), the harms it adds
    and their limits (``limits``)."""

    @property
    def name(self) -> str: ...

    @property
    def headline(self) -> tuple[str, ...]: ...

    @property
    def gain_metric(self) -> str: ...

    @property
    def limits(self) -> tuple[tuple[str, float], ...]: ...

    def items(self, part: Part) -> list[str]:
        """What identifies the part's items (stored in the units' keys)."""
        ...

    def size(self, part: Part) -> int: ...

    def score(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        part: Part,
        *,
        readout: Readout = FINAL,
        batch_size: int = 16,
        progress: bool | str = False,
        prompt_format: PromptFormat = PLAIN,
    ) -> dict[str, Any]:
        """The summary of the part (prompts in ``prompt_format``) under whatever edit is
        applied to ``model``."""
        ...

    def value(self, summary: Mapping[str, Any]) -> float:
        """The tuning value of a summary (higher is better)."""
        ...

    def harms(self, summary: Mapping[str, Any], unedited: Mapping[str, Any]) -> dict[str, float]:
        """The target's own harms of ``summary`` against the unedited model's."""
        ...


@dataclass(frozen=True)
class TruthfulQATarget:
    """TruthfulQA MC1/MC2/MC3: ``tune`` questions (fold 1) and ``report`` questions (fold 2)."""

    tune: tuple[MCQuestion, ...]
    report: tuple[MCQuestion, ...]
    name: str = "truthfulqa"
    headline: tuple[str, ...] = ("mc1", "mc2", "mc3")
    gain_metric: str = "mc2"
    limits: tuple[tuple[str, float], ...] = ()

    def _questions(self, part: Part) -> tuple[MCQuestion, ...]:
        return self.tune if part == "tune" else self.report

    def items(self, part: Part) -> list[str]:
        return [q.question for q in self._questions(part)]

    def size(self, part: Part) -> int:
        return len(self._questions(part))

    def score(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        part: Part,
        *,
        readout: Readout = FINAL,
        batch_size: int = 16,
        progress: bool | str = False,
        prompt_format: PromptFormat = PLAIN,
    ) -> dict[str, Any]:
        result = evaluate_truthfulqa(
            model,
            tokenizer,
            self._questions(part),
            batch_size=batch_size,
            readout=readout,
            progress=progress,
            prompt_format=prompt_format,
        )
        return dict(result.summary)

    def value(self, summary: Mapping[str, Any]) -> float:
        return tuning_criterion(summary)

    def harms(self, summary: Mapping[str, Any], unedited: Mapping[str, Any]) -> dict[str, float]:
        return {}


def bbq_pooled(per_item: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """Pooled BBQ figures of :func:`~spectral_edit.evaluate.bbq.evaluate_bbq` records
    (percent): ``accuracy`` over all items, ``stereotype_rate`` = share of the items with a
    known biased option whose answer is that option, and accuracy per context condition."""
    known = [r for r in per_item if r["biased_index"] is not None]
    by_condition = {c: [r for r in per_item if r["condition"] == c] for c in ("ambig", "disambig")}
    return {
        "accuracy": percent(sum(bool(r["correct"]) for r in per_item), len(per_item)),
        "stereotype_rate": percent(
            sum(r["predicted"] == r["biased_index"] for r in known), len(known)
        ),
        **{
            f"accuracy_{c}": percent(sum(bool(r["correct"]) for r in rows), len(rows))
            for c, rows in by_condition.items()
        },
    }


@dataclass(frozen=True)
class BBQTarget:
    """BBQ accuracy: ``tune`` and ``report`` items (held out from the demonstrations, and
    from different templates, :func:`split_bbq_tuning`)."""

    tune: tuple[BBQItem, ...]
    report: tuple[BBQItem, ...]
    name: str = "bbq"
    headline: tuple[str, ...] = ("accuracy", "stereotype_rate", "bias_score_ambig")
    gain_metric: str = "accuracy"
    limits: tuple[tuple[str, float], ...] = ((STEREOTYPE_HARM, 0.0),)

    def _items(self, part: Part) -> tuple[BBQItem, ...]:
        return self.tune if part == "tune" else self.report

    def items(self, part: Part) -> list[str]:
        return [f"{i.category}/{i.example_id}" for i in self._items(part)]

    def size(self, part: Part) -> int:
        return len(self._items(part))

    def score(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        part: Part,
        *,
        readout: Readout = FINAL,
        batch_size: int = 16,
        progress: bool | str = False,
        prompt_format: PromptFormat = PLAIN,
    ) -> dict[str, Any]:
        if not isinstance(readout, FinalLayerReadout):
            raise ValueError("the BBQ target scores with the model's own head only")
        result = evaluate_bbq(
            model,
            tokenizer,
            self._items(part),
            batch_size=batch_size,
            progress=progress,
            prompt_format=prompt_format,
        )
        ambig = result.summary["overall"]["ambig"]
        return {
            "n": len(result.per_item),
            **bbq_pooled(result.per_item),
            "bias_score_ambig": ambig["bias_score"],
            "overall": result.summary["overall"],
            "seconds": result.summary["seconds"],
        }

    def value(self, summary: Mapping[str, Any]) -> float:
        value = summary["accuracy"]
        return float("nan") if value is None else float(value)

    def harms(self, summary: Mapping[str, Any], unedited: Mapping[str, Any]) -> dict[str, float]:
        edited, before = summary["stereotype_rate"], unedited["stereotype_rate"]
        if edited is None or before is None:  # no item with a known biased option
            return {STEREOTYPE_HARM: 0.0}
        return {STEREOTYPE_HARM: float(edited) - float(before)}


def split_bbq_tuning(
    items: Sequence[BBQItem], per_part: int | None, seed: int
) -> tuple[list[BBQItem], list[BBQItem]]:
    """``(tuning items, report items)``: the templates (:func:`bbq_group_key`) of ``items``
    in a seeded order go alternately to the two parts (so no template is in both), each
    part's items are shuffled (seeded) and cut to ``per_part`` (``None`` = all).

    Raises:
        ValueError: fewer than two templates (the parts could not differ).
    """
    groups: dict[tuple[str, str], list[BBQItem]] = defaultdict(list)
    for item in items:
        groups[bbq_group_key(item)].append(item)
    if len(groups) < 2:
        raise ValueError(f"BBQ tuning needs items of two templates at least, got {len(groups)}")
    rng = random.Random(seed)
    keys = sorted(groups)
    rng.shuffle(keys)
    parts: tuple[list[BBQItem], list[BBQItem]] = ([], [])
    for i, key in enumerate(keys):
        parts[i % 2].extend(groups[key])
    for part in parts:
        rng.shuffle(part)
    return parts[0][:per_part], parts[1][:per_part]


@dataclass(frozen=True)
class TuneData:
    """The demonstrations and the target of a tuning run, and where the demonstrations
    come from (for the report)."""

    demos: list[Demonstration]
    target: TruthfulQATarget | BBQTarget
    source: str


def load_tune_data(
    target: str,
    *,
    n_demos: int,
    per_fold: int | None = None,
    demos_file: str | Path | None = None,
    mc_file: str = "mc_task_v0.json",
    data_dir: str | Path | None = None,
    seed: int = 0,
    echo: Callable[[str], None] = print,
    prompt_format: PromptFormat = PLAIN,
) -> TuneData:
    """The data of ``sea tune``: for ``truthfulqa``, the demonstrations of ``sea compare``
    (``demos_file``, else ``n_demos`` HaluEval ones) and the first ``per_fold`` questions
    of TruthfulQA folds 1 (tuning) and 2 (report); for ``bbq``, ``n_demos`` BBQ
    demonstrations (``sea demos bbq --n N --seed S``, unless ``demos_file``) and
    ``per_fold`` held-out items per part (:func:`split_bbq_tuning`). Demonstrations built
    here are built in ``prompt_format``; a ``demos_file``'s prompts are adopted into it
    at capture.

    Raises:
        ValueError: an unknown target; DataFileMissing / DataFormatError from loading.
    """
    if target == "truthfulqa":
        folds = truthfulqa_folds(mc_file, data_dir, per_fold=per_fold)
        if demos_file is not None:
            demos, source = read_demos(demos_file), str(demos_file)
        else:
            found = load_truthfulness_demos(
                n_demos, data_dir, seed, echo, prompt_format=prompt_format
            )
            demos, source = found.demos, found.source
        return TuneData(demos, TruthfulQATarget(tuple(folds[1]), tuple(folds[2])), source)
    if target == "bbq":
        demo_items, held_out = bbq_split(n_demos, seed, data_dir)
        tune, report = split_bbq_tuning(held_out, per_fold, seed)
        if demos_file is not None:
            demos, source = read_demos(demos_file), str(demos_file)
        else:
            demos = bbq_demos(demo_items, seed=seed, prompt_format=prompt_format)
            source = f"BBQ ({len(demos)} disambiguated items, seed {seed})"
        return TuneData(demos, BBQTarget(tuple(tune), tuple(report)), source)
    raise ValueError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")
