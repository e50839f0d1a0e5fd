"""HaluEval QA: knowledge, a question, its right answer and a hallucinated answer.

Files are JSON Lines (one object per line, blank lines skipped) with the fields
``knowledge, question, right_answer, hallucinated_answer``; the same reader serves the full
upstream ``halueval/qa_data.json`` (10,000 items) and the 500-item
``qa_one-turn_data.json`` / ``qa_multi-turn_data.json``.  Extra fields are ignored.

HaluEval general (``halueval/general_data.json``, JSON Lines): a user query, ChatGPT's
response and whether annotators found a hallucination in it (:func:`load_halueval_general`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .locate import resolve
from .readers import iter_json_lines, require_str

__all__ = [
    "HALUEVAL_SOURCES",
    "HaluEvalGeneral",
    "HaluEvalQA",
    "load_halueval_general",
    "load_halueval_qa",
    "load_halueval_source",
]

HALUEVAL_SOURCES: dict[str, tuple[str, ...]] = {
    "one-turn": ("qa_one-turn_data.json",),
    "multi-turn": ("qa_multi-turn_data.json",),
    "both": ("qa_one-turn_data.json", "qa_multi-turn_data.json"),
    "full": ("qa_data.json",),
}
"""``sea demos halueval --source`` → the HaluEval files read, in order: the 500-item
one-turn and multi-turn files (same questions, other hallucinations), both, or the full
10,000-item ``qa_data.json``."""


@dataclass(frozen=True)
class HaluEvalQA:
    """One HaluEval QA item. ``question`` is non-blank; the other fields are strings."""

    knowledge: str
    question: str
    right_answer: str
    hallucinated_answer: str


def load_halueval_qa(path: str | os.PathLike[str]) -> list[HaluEvalQA]:
    """Load a HaluEval QA JSON Lines file, in file order.

    Raises:
        DataFormatError: a line that is not a JSON object, a missing field, a non-string
            field or a blank question; the message names the file and line.
    """
    p = Path(path)
    return [
        HaluEvalQA(
            knowledge=require_str(obj, "knowledge", p, line),
            question=require_str(obj, "question", p, line, nonempty=True),
            right_answer=require_str(obj, "right_answer", p, line),
            hallucinated_answer=require_str(obj, "hallucinated_answer", p, line),
        )
        for line, obj in iter_json_lines(p)
    ]


def load_halueval_source(
    source: str = "one-turn", data_dir: str | os.PathLike[str] | None = None
) -> list[HaluEvalQA]:
    """The items of the files of :data:`HALUEVAL_SOURCES` ``[source]``, in file order.

    Raises:
        ValueError: an unknown ``source`` (the message lists the known ones).
        DataFileMissing, DataFormatError: as :func:`load_halueval_qa` and ``resolve``.
    """
    if source not in HALUEVAL_SOURCES:
        raise ValueError(f"--source must be one of {', '.join(HALUEVAL_SOURCES)}, not {source!r}")
    return [
        item
        for name in HALUEVAL_SOURCES[source]
        for item in load_halueval_qa(resolve(f"halueval/{name}", data_dir))
    ]


@dataclass(frozen=True)
class HaluEvalGeneral:
    """One HaluEval general record: ``chatgpt_response`` (a string, possibly blank), the
    ``user_query`` it answers (``""`` where the file has none) and the annotators' label
    (``"yes"``/``"no"`` from ``hallucination``, or ``hallucination_label`` in other upstream
    revisions; ``None`` where neither is present)."""

    chatgpt_response: str
    user_query: str = ""
    hallucination: str | None = None


def load_halueval_general(path: str | os.PathLike[str]) -> list[HaluEvalGeneral]:
    """Load HaluEval's ``general_data.json`` (JSON Lines), in file order.

    Only ``chatgpt_response`` is required; other fields are ignored.

    Raises:
        DataFormatError: a line that is not a JSON object, a missing or non-string
            ``chatgpt_response``, or a present but non-string ``user_query`` or label; the
            message names the file and line.
    """
    p = Path(path)
    records = []
    for line, obj in iter_json_lines(p):
        label_key = next((k for k in ("hallucination", "hallucination_label") if k in obj), None)
        records.append(
            HaluEvalGeneral(
                chatgpt_response=require_str(obj, "chatgpt_response", p, line),
                user_query=require_str(obj, "user_query", p, line) if "user_query" in obj else "",
                hallucination=None if label_key is None else require_str(obj, label_key, p, line),
            )
        )
    return records
