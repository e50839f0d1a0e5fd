"""General-capability "control" tasks, as log-likelihood multiple choice (plus GSM8K).

Every multiple-choice task becomes a list of :class:`ChoiceItem`: either one context and
several continuations (ARC, PIQA, BoolQ, ...), or several contexts and one continuation
(Winogrande).  A scorer compares ``log p(continuation | context)`` over
:attr:`ChoiceItem.pairs` and predicts the arg-max.

File formats (``control/*.jsonl`` in the data directory):

- ``{query, choices, gold}`` -- arc_easy, arc_challenge, piqa, openbook_qa, commonsense_qa,
  boolq (mosaicml/llm-foundry local eval data).  Joining rule: the query's trailing
  whitespace is removed, the task's *answer cue* is appended (``"\\nAnswer:"`` for ARC,
  PIQA and BoolQ, whose queries are ``"Question: ..."`` / ``"Passage: ...\\nQuestion: ..."``
  without a cue; nothing for openbook_qa, whose query is a sentence to complete, and for
  commonsense_qa, whose query already ends in ``"Answer:"``), and every choice gets one
  leading space unless it already starts with whitespace.  The word boundary therefore
  lives in the continuation, as in lm-evaluation-harness (``"Question: q\\nAnswer:"`` +
  ``" choice"``).
- ``{context_options, continuation, gold}`` -- winogrande: the contexts are the options as
  given, the single continuation gets one leading space by the same rule.
- ``{question, options, answer}`` -- mmlu_slice: ``options`` is one string of lines
  ``"A. ..."`` to ``"D. ..."`` (an option may span several lines); ``answer`` is the full
  option line (``"B. text"``), a bare letter, or a 0-based index.  The prompt follows
  lm-evaluation-harness's MMLU format without the subject header (the file has no subject):
  ``"{question}\\nA. {a}\\nB. {b}\\nC. {c}\\nD. {d}\\nAnswer:"`` with continuations
  ``" A"`` .. ``" D"``.
- ``{question, answer}`` -- gsm8k_test: :class:`GSM8KItem`; ``final`` is the text after the
  last ``"#### "`` with thousands separators (commas) removed.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from .errors import DataFormatError
from .locate import resolve
from .readers import iter_json_lines, require_int, require_str, require_str_list

__all__ = [
    "CONTROL_TASKS",
    "DEFAULT_CONTROL_TASKS",
    "ChoiceItem",
    "GSM8KItem",
    "join_continuation",
    "load_control_task",
    "load_gsm8k",
    "load_mmlu_slice",
    "load_query_choices",
    "load_winogrande",
]


@dataclass(frozen=True)
class ChoiceItem:
    """A log-likelihood multiple-choice item.

    Invariants (checked on construction): either ``len(contexts) == 1`` and
    ``len(continuations) >= 2`` (choose the best continuation), or ``len(contexts) >= 2``
    and ``len(continuations) == 1`` (choose the best context, Winogrande-style);
    ``0 <= gold < n_choices``.
    """

    task: str
    contexts: tuple[str, ...]
    continuations: tuple[str, ...]
    gold: int

    def __post_init__(self) -> None:
        nc, nk = len(self.contexts), len(self.continuations)
        if not ((nc == 1 and nk >= 2) or (nc >= 2 and nk == 1)):
            raise ValueError(
                f"ChoiceItem needs one context and >= 2 continuations or >= 2 contexts and "
                f"one continuation, got {nc} context(s) and {nk} continuation(s)"
            )
        if isinstance(self.gold, bool) or not 0 <= self.gold < self.n_choices:
            raise ValueError(f"gold {self.gold!r} out of range for {self.n_choices} choices")

    @property
    def n_choices(self) -> int:
        """Number of candidates (``max(len(contexts), len(continuations))``)."""
        return max(len(self.contexts), len(self.continuations))

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """``(context, continuation)`` for each candidate, in choice order; length n_choices."""
        if len(self.contexts) == 1:
            return tuple((self.contexts[0], c) for c in self.continuations)
        return tuple((ctx, self.continuations[0]) for ctx in self.contexts)


@dataclass(frozen=True)
class GSM8KItem:
    """A GSM8K problem; ``final`` is the reference answer with commas removed (e.g. "1450")."""

    question: str
    answer: str
    final: str


def join_continuation(text: str) -> str:
    """Give a continuation its leading space, unless it already starts with whitespace."""
    return text if text[:1].isspace() else " " + text


# --------------------------------------------------------------------------- loaders


def load_query_choices(
    path: str | os.PathLike[str], task: str | None = None, answer_cue: str = ""
) -> list[ChoiceItem]:
    """Load a ``{query, choices, gold}`` JSON Lines file (see the module docstring).

    Args:
        path: the file.
        task: task name stored on the items (default: the file's stem).
        answer_cue: text appended to the right-stripped query, e.g. ``"\\nAnswer:"``.

    Raises:
        DataFormatError: bad JSON, a missing/ill-typed field, fewer than two choices, an
            empty choice, or ``gold`` outside ``[0, len(choices))`` (file and line named).
    """
    p = Path(path)
    name = task or p.stem
    items: list[ChoiceItem] = []
    for line, obj in iter_json_lines(p):
        query = require_str(obj, "query", p, line, nonempty=True)
        choices = require_str_list(obj, "choices", p, line, min_len=2)
        if any(not c.strip() for c in choices):
            raise DataFormatError(p, "field 'choices' contains an empty choice", line)
        gold = require_int(obj, "gold", p, line, low=0, high=len(choices) - 1)
        context = query.rstrip() + answer_cue
        items.append(ChoiceItem(name, (context,), tuple(map(join_continuation, choices)), gold))
    return items


def load_winogrande(path: str | os.PathLike[str], task: str = "winogrande") -> list[ChoiceItem]:
    """Load ``{context_options, continuation, gold}`` lines: several contexts, one continuation.

    Raises:
        DataFormatError: bad JSON, missing/ill-typed fields, fewer than two context options,
            an empty continuation, or ``gold`` out of range (file and line named).
    """
    p = Path(path)
    items: list[ChoiceItem] = []
    for line, obj in iter_json_lines(p):
        contexts = require_str_list(obj, "context_options", p, line, min_len=2)
        continuation = require_str(obj, "continuation", p, line, nonempty=True)
        gold = require_int(obj, "gold", p, line, low=0, high=len(contexts) - 1)
        items.append(ChoiceItem(task, contexts, (join_continuation(continuation),), gold))
    return items


def _parse_mmlu_options(options: str, p: Path, line: int) -> list[str]:
    """Split ``"A. x\\nB. y\\n..."`` into option texts; a line that does not start with the
    next expected letter continues the previous option."""
    texts: list[str] = []
    for raw in options.split("\n"):
        letter = string.ascii_uppercase[len(texts)] if len(texts) < 26 else None
        if letter is not None and (raw == f"{letter}." or raw.startswith(f"{letter}. ")):
            texts.append(raw[len(letter) + 2 :])
        elif texts:
            texts[-1] += "\n" + raw
        else:
            raise DataFormatError(p, f"options must start with 'A. ', got {raw[:20]!r}", line)
    if len(texts) < 2:
        raise DataFormatError(p, f"options list {len(texts)} choice(s), need at least 2", line)
    return texts


def _mmlu_gold(answer: Any, texts: list[str], p: Path, line: int) -> int:
    n = len(texts)
    if isinstance(answer, int) and not isinstance(answer, bool):
        gold = answer
    elif isinstance(answer, str) and (m := re.fullmatch(r"([A-Z])(?:\.(?: (.*))?)?", answer, re.S)):
        gold = string.ascii_uppercase.index(m.group(1))
        if m.group(2) is not None and gold < n and m.group(2).strip() != texts[gold].strip():
            raise DataFormatError(
                p, f"answer {answer[:40]!r} does not match option {m.group(1)}'s text", line
            )
    else:
        raise DataFormatError(
            p, f"answer must be an index, a letter or 'X. text', got {answer!r:.40}", line
        )
    if not 0 <= gold < n:
        raise DataFormatError(p, f"answer {answer!r:.40} is out of range for {n} options", line)
    return gold


def load_mmlu_slice(path: str | os.PathLike[str], task: str = "mmlu") -> list[ChoiceItem]:
    """Load ``{question, options, answer}`` lines into MMLU-style prompts (module docstring).

    Raises:
        DataFormatError: bad JSON, missing fields, options not lettered ``A.``, ``B.``, ...
            in order, or an answer that is out of range or disagrees with its option's text.
    """
    p = Path(path)
    items: list[ChoiceItem] = []
    for line, obj in iter_json_lines(p):
        question = require_str(obj, "question", p, line, nonempty=True)
        texts = _parse_mmlu_options(require_str(obj, "options", p, line, nonempty=True), p, line)
        if "answer" not in obj:
            raise DataFormatError(p, "missing field 'answer'", line)
        gold = _mmlu_gold(obj["answer"], texts, p, line)
        letters = string.ascii_uppercase[: len(texts)]
        body = "\n".join(f"{letter}. {text}" for letter, text in zip(letters, texts, strict=True))
        prompt = f"{question.strip()}\n{body}\nAnswer:"
        items.append(ChoiceItem(task, (prompt,), tuple(f" {c}" for c in letters), gold))
    return items


def load_gsm8k(path: str | os.PathLike[str]) -> list[GSM8KItem]:
    """Load GSM8K ``{question, answer}`` lines; ``final`` follows the last ``"#### "``.

    Raises:
        DataFormatError: bad JSON, a missing field, or an answer without a non-empty
            ``"#### "`` final answer (file and line named).
    """
    p = Path(path)
    items: list[GSM8KItem] = []
    for line, obj in iter_json_lines(p):
        question = require_str(obj, "question", p, line, nonempty=True)
        answer = require_str(obj, "answer", p, line, nonempty=True)
        if "#### " not in answer:
            raise DataFormatError(p, "answer has no '#### ' final-answer marker", line)
        final = answer.rsplit("#### ", 1)[1].strip().replace(",", "")
        if not final:
            raise DataFormatError(p, "the final answer after '#### ' is empty", line)
        items.append(GSM8KItem(question, answer, final))
    return items


# --------------------------------------------------------------------------- registry

_Loader = Callable[[Path], list[ChoiceItem]] | Callable[[Path], list[GSM8KItem]]


def _qc(task: str, cue: str) -> Callable[[Path], list[ChoiceItem]]:
    return partial(load_query_choices, task=task, answer_cue=cue)


CONTROL_TASKS: dict[str, tuple[str, _Loader]] = {
    "arc_easy": ("control/arc_easy.jsonl", _qc("arc_easy", "\nAnswer:")),
    "arc_challenge": ("control/arc_challenge.jsonl", _qc("arc_challenge", "\nAnswer:")),
    "piqa": ("control/piqa.jsonl", _qc("piqa", "\nAnswer:")),
    "boolq": ("control/boolq.jsonl", _qc("boolq", "\nAnswer:")),
    "openbook_qa": ("control/openbook_qa.jsonl", _qc("openbook_qa", "")),
    "commonsense_qa": ("control/commonsense_qa.jsonl", _qc("commonsense_qa", "")),
    "winogrande": ("control/winogrande.jsonl", partial(load_winogrande, task="winogrande")),
    "mmlu": ("control/mmlu_slice.jsonl", partial(load_mmlu_slice, task="mmlu")),
    "gsm8k": ("control/gsm8k_test.jsonl", load_gsm8k),
}
"""Task name -> (relative path in the data dir, loader taking that path)."""

DEFAULT_CONTROL_TASKS: tuple[str, ...] = (
    "arc_easy",
    "arc_challenge",
    "piqa",
    "openbook_qa",
    "commonsense_qa",
    "winogrande",
    "boolq",
    "mmlu",
)
"""The control tasks run by default (``sea eval control``, ``sea compare``): every
multiple-choice task; GSM8K (scored by generation, slow) only when asked for."""


def load_control_task(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[ChoiceItem] | list[GSM8KItem]:
    """Load control task ``name`` (a :data:`CONTROL_TASKS` key) from the data directory.

    ``offset`` skips the first ``offset`` items (file order); ``limit`` then keeps the
    next ``limit`` items, ``None`` keeps all (items ``[offset, offset + limit)``).

    Raises:
        KeyError: unknown task name (the message lists the known ones).
        DataFileMissing: the file is absent (see :func:`~spectral_edit.data.locate.resolve`).
        DataFormatError: the file is malformed.
    """
    if name not in CONTROL_TASKS:
        raise KeyError(f"unknown control task {name!r}; known: {sorted(CONTROL_TASKS)}")
    if limit is not None and (isinstance(limit, bool) or limit < 0):
        raise ValueError(f"limit must be a non-negative integer or None, got {limit!r}")
    if isinstance(offset, bool) or offset < 0:
        raise ValueError(f"offset must be a non-negative integer, got {offset!r}")
    relpath, loader = CONTROL_TASKS[name]
    items = loader(resolve(relpath, data_dir))[offset:]
    return items if limit is None else items[:limit]
