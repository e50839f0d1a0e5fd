"""Text-quality metrics of free generations: repetition and diversity (pure functions).

Per text, on a token list (e.g. :func:`words` of a generation):

- :func:`repeated_ngram_rate` -- the share of the text's n-grams that already occurred
  earlier in the same text (degenerate loops push it towards 1);
- :func:`distinct_n` -- unique n-grams over all n-grams (low = repetitive).

Both are fractions in ``[0, 1]``, and both are ``0.0`` for a text with no n-gram (fewer
than ``n`` tokens): an empty or near-empty generation counts as neither repetitive nor
diverse. Corpus level (:func:`corpus_rate`): the unweighted mean over texts, every text
counted (those without an n-gram with their 0.0), in **percent** as the package's
aggregate rates are; ``None`` for no texts.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Sequence

__all__ = ["corpus_rate", "distinct_n", "ngrams", "repeated_ngram_rate", "words"]

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """The words of ``text``: maximal runs of ``\\w`` characters (Unicode letters, digits
    and ``_``; Python's :mod:`re`) of the lower-cased text, in order; punctuation and
    whitespace separate words and are dropped (``"Don't stop!"`` → ``["don", "t", "stop"]``)."""
    return _WORD.findall(text.lower())


def ngrams(tokens: Sequence[Hashable], n: int) -> list[tuple[Hashable, ...]]:
    """The ``len(tokens) - n + 1`` contiguous n-grams of ``tokens`` in order (none if
    fewer than ``n`` tokens).

    Raises:
        ValueError: ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def repeated_ngram_rate(tokens: Sequence[Hashable], n: int = 4) -> float:
    """The share of the n-grams of ``tokens`` that already occurred at an earlier position
    of the same sequence (the first occurrence of each n-gram is not a repeat; the
    ``k``-th is). ``0.0`` when there is no n-gram (fewer than ``n`` tokens).

    Example: ``a b a b a`` with ``n = 2`` has n-grams ``ab ba ab ba``, of which the last
    two repeat: 0.5.
    """
    grams = ngrams(tokens, n)
    if not grams:
        return 0.0
    return (len(grams) - len(set(grams))) / len(grams)


def distinct_n(tokens: Sequence[Hashable], n: int = 2) -> float:
    """Distinct-n: the number of distinct n-grams of ``tokens`` over their total count
    (Li et al., 2016, per text). ``0.0`` when there is no n-gram (fewer than ``n``
    tokens). Note ``distinct_n == 1 - repeated_ngram_rate`` for the same ``n``."""
    grams = ngrams(tokens, n)
    if not grams:
        return 0.0
    return len(set(grams)) / len(grams)


def corpus_rate(values: Iterable[float]) -> float | None:
    """The unweighted mean of per-text fractions, in percent; ``None`` for no texts."""
    values = list(values)
    if not values:
        return None
    return 100.0 * sum(values) / len(values)
