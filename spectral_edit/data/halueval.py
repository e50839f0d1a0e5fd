"""HaluEval QA: knowledge, a question, its right answer and a hallucinated answer.

Files are JSON Lines (one object per line, blank lines skipped) with the fields
``knowledge, question, right_answer, hallucinated_answer``; the same reader serves the full
upstream ``halueval/qa_data.json`` (10,000 items) and the 500-item
``qa_one-turn_data.json`` / ``qa_multi-turn_data.json``.  Extra fields are ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import iter_json_lines, require_str

__all__ = ["HaluEvalQA", "load_halueval_qa"]


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
