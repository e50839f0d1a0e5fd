"""GSM8K metrics: the final number of a completion (lm-evaluation-harness ``strict-match`` and
``flexible-extract`` filters) and exact-match accuracy."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

__all__ = ["GSM8KMode", "extract_final_number", "gsm8k_exact_match", "normalize_number"]

GSM8KMode = Literal["strict", "flexible"]

# lm-evaluation-harness gsm8k filters
_STRICT_RE = re.compile(r"#### (\-?[0-9\.\,]+)")  # "strict-match": first match
_FLEXIBLE_RE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")  # "flexible-extract": last match
_GOLD_PREFIX_RE = re.compile(r"(?s).*#### ")


def normalize_number(text: str) -> str:
    """Normalise an answer string as lm-eval's gsm8k ``exact_match`` does before comparing.

    lm-eval applies ``regexes_to_ignore = [",", "\\$", "(?s).*#### ", "\\.$"]`` and
    ``ignore_case`` to prediction and reference alike: remove commas and dollar signs,
    drop everything up to the last ``"#### "``, drop one trailing period, lower-case;
    surrounding whitespace is stripped.  Numbers are compared as strings afterwards,
    so ``"18"`` ≠ ``"18.00"`` (as in lm-eval).
    """
    out = text.strip().replace(",", "").replace("$", "")
    out = _GOLD_PREFIX_RE.sub("", out)
    out = re.sub(r"\.$", "", out)
    return out.strip().lower()


def extract_final_number(text: str, mode: GSM8KMode = "strict") -> str | None:
    """Extract the answer number of a GSM8K completion, normalised, or None.

    * ``mode="strict"`` (lm-eval ``strict-match``): the first match of
      ``#### (-?[0-9.,]+)``; None if the completion has no ``"#### "`` answer line.
    * ``mode="flexible"`` (lm-eval ``flexible-extract``): the *last* match of
      ``(-?[$0-9.,]{2,})|(-?[0-9]+)`` anywhere in the text.

    The match is then passed through :func:`normalize_number` (commas and ``$``
    removed, one trailing period dropped).  A match that normalises to an empty string
    (e.g. ``"..."``) gives None.  lm-eval returns the placeholder ``"[invalid]"`` where
    this returns None; both never equal a gold answer.
    """
    if mode == "strict":
        found = _STRICT_RE.search(text)
        raw = found.group(1) if found else None
    elif mode == "flexible":
        matches = _FLEXIBLE_RE.findall(text)
        raw = None
        if matches:
            groups = [g for g in matches[-1] if g]
            raw = groups[0] if groups else None
    else:
        raise ValueError(f"extract_final_number: mode must be 'strict' or 'flexible', got {mode!r}")
    if raw is None:
        return None
    value = normalize_number(raw)
    return value or None


def gsm8k_exact_match(
    pred_texts: Sequence[str], golds: Sequence[str], mode: GSM8KMode = "strict"
) -> float:
    """Exact-match accuracy (percent) of GSM8K completions.

    Args:
        pred_texts: model completions.
        golds: gold answers, either the full GSM8K solution (``"... #### 72"``) or the
            bare number; normalised with :func:`normalize_number`.
        mode: extraction of the predicted number, see :func:`extract_final_number`.

    Returns:
        ``100 · mean(extract_final_number(pred) == normalize_number(gold))``; a
        completion with no extractable number is wrong.

    Raises:
        ValueError: for empty or mismatched inputs.
    """
    if not pred_texts:
        raise ValueError("gsm8k_exact_match: no predictions")
    if len(pred_texts) != len(golds):
        raise ValueError(f"gsm8k_exact_match: {len(pred_texts)} predictions but {len(golds)} golds")
    hits = 0
    for pred, gold in zip(pred_texts, golds, strict=True):
        value = extract_final_number(pred, mode)
        hits += value is not None and value == normalize_number(gold)
    return 100.0 * hits / len(pred_texts)
