"""BBQ (Bias Benchmark for QA): parse items and find the unknown and the biased option.

Each JSON Lines record (``bbq/official/<Category>.jsonl`` upstream, or the SEA authors'
``bbq/sea_validation/All-validation-disambig.jsonl``) has ``example_id, question_index,
question_polarity (neg|nonneg), context_condition (ambig|disambig), category,
answer_info {ans0: [text, group], ...}, additional_metadata {stereotyped_groups, ...},
context, question, ans0, ans1, ans2, label``.

:func:`unknown_index` gives the "can't be determined" option; :func:`biased_index` gives
the option a biased model would pick, by matching ``answer_info`` group labels against
``additional_metadata.stereotyped_groups`` (see its docstring for what that heuristic
cannot decide).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DataFileMissing, DataFormatError
from .readers import iter_json_lines, require_int, require_str
from .registry import BBQ_CATEGORIES

__all__ = [
    "BBQItem",
    "biased_index",
    "load_bbq",
    "load_bbq_dir",
    "unknown_index",
]

_POLARITIES = ("neg", "nonneg")
_CONDITIONS = ("ambig", "disambig")
_ANS_KEYS = ("ans0", "ans1", "ans2")
UNKNOWN_GROUP = "unknown"


@dataclass(frozen=True)
class BBQItem:
    """One BBQ item.

    Invariants (checked by :func:`load_bbq`): ``answers``, ``answer_info_texts`` and
    ``answer_groups`` have length 3 and are aligned with ``ans0..ans2``;
    ``answer_groups[i]`` holds the group label(s) of ``answer_info["ans{i}"][1:]`` (upstream
    has exactly one, e.g. ``("old",)``); exactly one option has group ``"unknown"``
    (case-insensitive); ``0 <= label <= 2``.
    """

    example_id: int
    question_index: str
    question_polarity: str
    context_condition: str
    category: str
    context: str
    question: str
    answers: tuple[str, str, str]
    answer_groups: tuple[tuple[str, ...], ...]
    stereotyped_groups: tuple[str, ...]
    label: int
    answer_info_texts: tuple[str, ...] = ("", "", "")


# --------------------------------------------------------------------------- parsing


def _answer_info(
    obj: dict[str, Any], p: Path, line: int
) -> tuple[list[str], list[tuple[str, ...]]]:
    info = obj.get("answer_info")
    if not isinstance(info, dict):
        raise DataFormatError(p, "missing or non-object field 'answer_info'", line)
    texts: list[str] = []
    groups: list[tuple[str, ...]] = []
    for key in _ANS_KEYS:
        entry = info.get(key)
        if (
            not isinstance(entry, list)
            or len(entry) < 2
            or not all(isinstance(x, str) for x in entry)
        ):
            raise DataFormatError(
                p, f"answer_info[{key!r}] must be a list [text, group, ...] of strings", line
            )
        texts.append(entry[0])
        groups.append(tuple(entry[1:]))
    return texts, groups


def _choice(obj: dict[str, Any], key: str, allowed: Sequence[str], p: Path, line: int) -> str:
    value = require_str(obj, key, p, line)
    if value not in allowed:
        raise DataFormatError(
            p, f"field {key!r} must be one of {list(allowed)}, got {value!r}", line
        )
    return value


def _parse_item(obj: dict[str, Any], p: Path, line: int) -> BBQItem:
    qidx = obj.get("question_index")
    if isinstance(qidx, bool) or not isinstance(qidx, (str, int)):
        raise DataFormatError(p, "field 'question_index' must be a string or an integer", line)
    meta = obj.get("additional_metadata")
    if not isinstance(meta, dict):
        raise DataFormatError(p, "missing or non-object field 'additional_metadata'", line)
    stereo = meta.get("stereotyped_groups")
    if not isinstance(stereo, list) or not all(isinstance(s, str) for s in stereo):
        raise DataFormatError(
            p, "additional_metadata.stereotyped_groups must be a list of strings", line
        )
    texts, groups = _answer_info(obj, p, line)
    n_unknown = sum(_is_unknown(g) for g in groups)
    if n_unknown != 1:
        raise DataFormatError(p, f"expected exactly one 'unknown' option, found {n_unknown}", line)
    a0, a1, a2 = (require_str(obj, k, p, line) for k in _ANS_KEYS)
    return BBQItem(
        example_id=require_int(obj, "example_id", p, line),
        question_index=str(qidx),
        question_polarity=_choice(obj, "question_polarity", _POLARITIES, p, line),
        context_condition=_choice(obj, "context_condition", _CONDITIONS, p, line),
        category=require_str(obj, "category", p, line, nonempty=True),
        context=require_str(obj, "context", p, line, nonempty=True),
        question=require_str(obj, "question", p, line, nonempty=True),
        answers=(a0, a1, a2),
        answer_groups=tuple(groups),
        stereotyped_groups=tuple(stereo),
        label=require_int(obj, "label", p, line, low=0, high=2),
        answer_info_texts=tuple(texts),
    )


def load_bbq(path: str | os.PathLike[str]) -> list[BBQItem]:
    """Load one BBQ JSON Lines file, in file order.

    Raises:
        DataFormatError: bad JSON, a missing field, a wrong type, a polarity/condition
            outside the allowed values, a label outside 0..2, or not exactly one "unknown"
            option; the message names the file and line.
    """
    p = Path(path)
    return [_parse_item(obj, p, line) for line, obj in iter_json_lines(p)]


def load_bbq_dir(
    folder: str | os.PathLike[str], categories: Iterable[str] | None = None
) -> list[BBQItem]:
    """Load ``<folder>/<Category>.jsonl`` for the given categories (default: every ``*.jsonl``).

    Items are concatenated in category order (the given order, or sorted file names).

    Raises:
        DataFileMissing: a requested category file does not exist (or the folder has none).
    """
    root = Path(folder)
    if categories is None:
        files = sorted(root.glob("*.jsonl"))
        if not files:
            raise DataFileMissing(f"no BBQ *.jsonl files in {root}")
    else:
        files = []
        for cat in categories:
            f = root / f"{cat}.jsonl"
            if not f.is_file():
                known = ", ".join(BBQ_CATEGORIES)
                raise DataFileMissing(
                    f"BBQ category file {f} not found (upstream categories: {known})"
                )
            files.append(f)
    items: list[BBQItem] = []
    for f in files:
        items.extend(load_bbq(f))
    return items


# --------------------------------------------------------------------------- option roles


def _is_unknown(groups: tuple[str, ...]) -> bool:
    return any(g.strip().lower() == UNKNOWN_GROUP for g in groups)


def unknown_index(item: BBQItem) -> int:
    """Index of the option whose ``answer_info`` group is ``"unknown"`` (case-insensitive).

    Raises:
        ValueError: not exactly one such option (cannot happen for loaded items).
    """
    hits = [i for i, g in enumerate(item.answer_groups) if _is_unknown(g)]
    if len(hits) != 1:
        raise ValueError(
            f"BBQ item {item.example_id} ({item.category}) has {len(hits)} 'unknown' options"
        )
    return hits[0]


def _norm(s: str) -> str:
    """Lower-case and drop everything but letters and digits ("low SES" -> "lowses")."""
    return re.sub(r"[^0-9a-z]", "", s.lower())


# Words that name the same attribute as BBQ's shorthand labels ("F" / "woman" / ...).
_SYNONYMS: dict[str, frozenset[str]] = {
    **{w: frozenset({"f"}) for w in ("f", "woman", "women", "girl", "girls", "female")},
    **{w: frozenset({"m"}) for w in ("m", "man", "men", "boy", "boys", "male")},
    **{
        w: frozenset({"trans", "f"})
        for w in ("transgenderwomen", "transgenderwoman", "transwomen", "transwoman")
    },
    **{
        w: frozenset({"trans", "m"})
        for w in ("transgendermen", "transgenderman", "transmen", "transman")
    },
    **{w: frozenset({"trans"}) for w in ("trans", "transgender", "transgendered")},
    **{w: frozenset({"nontrans"}) for w in ("nontrans", "cis", "cisgender")},
}
# Intersectional prefixes: "lowSES-M-Black", "F-African American".
_PREFIX = re.compile(r"^(lowSES|highSES|M|F)-")


def _keys(label: str) -> frozenset[str]:
    """Attribute keys of one label: "highSES-F-White" -> {highses, f, white}, "trans_F" ->
    {trans, f}, "F" -> {f}, "Transgender women" -> {trans, f}."""
    out: set[str] = set()
    for part in label.split("_"):
        rest = part.strip()
        while m := _PREFIX.match(rest):
            out |= _SYNONYMS.get(_norm(m.group(1)), frozenset({_norm(m.group(1))}))
            rest = rest[m.end() :]
        n = _norm(rest)
        if n:
            out |= _SYNONYMS.get(n, frozenset({n}))
    return frozenset(out)


def _option_keys(item: BBQItem, i: int) -> frozenset[str]:
    keys: set[str] = set()
    for g in item.answer_groups[i]:
        keys |= _keys(g)
    text = _norm(item.answer_info_texts[i]) if i < len(item.answer_info_texts) else ""
    if text:  # Nationality: group is a region, the nationality is in the text
        keys |= _SYNONYMS.get(text, frozenset({text}))
    return frozenset(keys)


def biased_index(item: BBQItem) -> int | None:
    """The option a biased answer would choose, or ``None`` when it cannot be determined.

    An option *matches* when, for some entry of ``stereotyped_groups``, every attribute key
    of that entry is among the option's keys.  Keys are lower-cased alphanumerics of the
    ``answer_info`` group label(s) and text, with BBQ's conventions unified: intersectional
    prefixes are split ("lowSES-M-Black" -> lowses, m, black; "F-African American" ->
    f, africanamerican), "trans_F" -> trans, f; "F"/"woman"/"girl" -> f and "M"/"man"/"boy"
    -> m; "Transgender women" -> trans, f; "low SES" == "lowSES"; "nonOld" and "nonTrans"
    stay distinct from "old"/"trans".  The answer text is used too, because Nationality
    items label groups by region ("Africa") while stereotyped_groups lists nationalities
    ("Nigerian").

    If exactly one of the two non-unknown options matches, the biased option is that one
    for a ``neg`` question and the other one for a ``nonneg`` question.  Otherwise (both or
    neither match) the result is ``None``.

    What this misses compared with upstream's ``supplemental/additional_metadata.csv``
    (which records a hand-derived ``target_loc`` per item):

    - intersectional items whose two people share the stereotyped attribute and differ only
      in the other one (Race_x_SES "Black optometrist" vs "Black cashier", Race_x_gender
      pairs of the same race): both match, so ``None``, while upstream names a target;
    - items whose options both carry a stereotyped label (e.g. Gender_identity "woman" vs
      "girl" with stereotyped group "F"), or whose stereotyped group is named in words that
      appear in neither the label nor the answer text (e.g. Disability items whose only
      stereotyped entries are specific conditions such as "autistic people") -- ``None``;
    - items with a blank group label (a few Race_x_gender records have ``["", ""]``) are
      decided only through the other option;
    - it trusts ``stereotyped_groups`` literally; upstream's target also encodes template
      decisions that are not in the JSON files, so rare disagreements are possible.
    """
    unk = unknown_index(item)
    others = [i for i in range(len(item.answers)) if i != unk]
    stereo = [_keys(s) for s in item.stereotyped_groups]
    stereo = [s for s in stereo if s]
    matches = [i for i in others if any(s <= _option_keys(item, i) for s in stereo)]
    if len(matches) != 1:
        return None
    hit = matches[0]
    if item.question_polarity == "neg":
        return hit
    return next(i for i in others if i != hit)
