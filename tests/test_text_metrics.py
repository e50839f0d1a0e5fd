"""Repetition and diversity of generated text, on hand-made strings with known values."""

import pytest

from spectral_edit.evaluate.metrics.text import (
    corpus_rate,
    distinct_n,
    ngrams,
    repeated_ngram_rate,
    words,
)


def test_words_lowercase_word_runs():
    assert words("Don't stop!  Über 3 CATS_x...") == ["don", "t", "stop", "über", "3", "cats_x"]
    assert words("  ,.;  ") == []
    assert words("") == []


def test_ngrams():
    assert ngrams(["a", "b", "c"], 2) == [("a", "b"), ("b", "c")]
    assert ngrams(["a", "b"], 3) == []
    with pytest.raises(ValueError):
        ngrams(["a"], 0)


def test_repeated_ngram_rate_known_values():
    # ab ba ab ba: the third and fourth bigrams occurred before
    assert repeated_ngram_rate(["a", "b", "a", "b", "a"], 2) == 0.5
    # 7 four-grams; "the cat sat on" and "cat sat on the" come back once each
    tokens = words("The cat sat on the cat sat on the mat.")
    assert repeated_ngram_rate(tokens) == pytest.approx(2 / 7)
    # the k-th occurrence repeats (k - 1 >= 1): 5 unigrams, 4 repeats
    assert repeated_ngram_rate(["x"] * 5, 1) == pytest.approx(0.8)
    assert repeated_ngram_rate(["one", "two", "three", "four", "five"], 4) == 0.0


def test_no_ngram_is_zero():
    assert repeated_ngram_rate([], 4) == 0.0
    assert repeated_ngram_rate(["a", "a", "a"], 4) == 0.0
    assert distinct_n([], 2) == 0.0
    assert distinct_n(["a"], 2) == 0.0


def test_distinct_n_known_values():
    assert distinct_n(["a", "a", "a", "a"], 2) == pytest.approx(1 / 3)
    assert distinct_n(["a", "b", "c"], 2) == 1.0
    assert distinct_n(words("to be or not to be"), 2) == pytest.approx(4 / 5)
    assert distinct_n(words("to be or not to be"), 1) == pytest.approx(4 / 6)


def test_distinct_is_one_minus_repeated_for_the_same_n():
    tokens = words("a rose is a rose is a rose")
    for n in (1, 2, 3):
        assert distinct_n(tokens, n) == pytest.approx(1 - repeated_ngram_rate(tokens, n))


def test_corpus_rate_is_mean_in_percent():
    assert corpus_rate([0.5, 0.0, 1.0]) == pytest.approx(50.0)
    assert corpus_rate(iter([0.25])) == pytest.approx(25.0)
    assert corpus_rate([]) is None
