"""Tests for spectral_edit.evaluate.metrics (one module per benchmark), on small hand-made
inputs."""

from __future__ import annotations

import json
import math

import pytest

from spectral_edit.evaluate.metrics.bbq import BBQPrediction, bbq_metrics
from spectral_edit.evaluate.metrics.crows_pairs import crows_metrics
from spectral_edit.evaluate.metrics.gsm8k import (
    extract_final_number,
    gsm8k_exact_match,
    normalize_number,
)
from spectral_edit.evaluate.metrics.multiple_choice import (
    choice_accuracy,
    choice_lengths,
    mc_scores,
    mean_mc,
)

L = math.log

# ============================================================================ TruthfulQA


def test_mc1_argmax_and_ties() -> None:
    mc2 = ([L(0.5), L(0.5)], [1, 0])
    assert mc_scores([-1.0, -2.0, -0.5], [1, 0, 0], *mc2)["mc1"] == 0.0
    assert mc_scores([-0.5, -2.0, -0.7], [1, 0, 0], *mc2)["mc1"] == 1.0
    # tie: the first maximum wins (np.argmax), so a true answer listed first wins the tie...
    assert mc_scores([-0.5, -2.0, -0.5], [1, 0, 0], *mc2)["mc1"] == 1.0
    # ...and a true answer listed after an equally scored false one loses it
    assert mc_scores([-0.5, -0.5, -3.0], [0, 1, 0], *mc2)["mc1"] == 0.0
    assert mc_scores([-0.9, -0.5, -3.0], [0, 1, 0], *mc2)["mc1"] == 1.0


def test_mc2_is_normalised_true_probability_mass() -> None:
    mc1 = ([-1.0, -2.0], [1, 0])
    # probabilities 0.2, 0.1 (true) and 0.3, 0.4 (false) → 0.3 / 1.0
    scores = [L(0.2), L(0.1), L(0.3), L(0.4)]
    res = mc_scores(*mc1, scores, [1, 1, 0, 0])
    assert res["mc2"] == pytest.approx(0.3)
    # not normalised to 1: p = 0.02, 0.01, 0.03 → 0.03 / 0.06
    res = mc_scores(*mc1, [L(0.02), L(0.01), L(0.03)], [1, 1, 0])
    assert res["mc2"] == pytest.approx(0.5)
    # invariant to a common shift, and finite where exp() itself underflows to 0
    shifted = mc_scores(*mc1, [v - 1000.0 for v in scores], [1, 1, 0, 0])
    assert shifted["mc2"] == pytest.approx(0.3)


def test_mc2_splits_at_first_zero_like_lm_eval() -> None:
    mc1 = ([-1.0, -2.0], [1, 0])
    scores = [L(0.1), L(0.2), L(0.3), L(0.4)]
    # lm-eval: everything from the first 0 on counts as false, including the later 1
    assert mc_scores(*mc1, scores, [1, 0, 1, 0])["mc2"] == pytest.approx(0.1)
    # no choice before the first 0 → lm-eval's empty true set → 0
    assert mc_scores(*mc1, scores, [0, 1, 1, 0])["mc2"] == 0.0


def test_mc3_fraction_of_true_above_every_false() -> None:
    mc1 = ([-1.0, -2.0], [1, 0])
    # true 0.5, 0.1; false 0.3, 0.1 → only 0.5 beats the best false (0.3)
    res = mc_scores(*mc1, [L(0.5), L(0.1), L(0.3), L(0.1)], [1, 1, 0, 0])
    assert res["mc3"] == pytest.approx(0.5)
    assert res["mc2"] == pytest.approx(0.6)
    # MC3 goes by label, not position: trues 0.1, 0.3 vs falses 0.2, 0.4 → 0
    res = mc_scores(*mc1, [L(0.1), L(0.2), L(0.3), L(0.4)], [1, 0, 1, 0])
    assert res["mc3"] == 0.0
    # (a positional split would call the 0.4 false and give 0 here)
    res = mc_scores(*mc1, [L(0.1), L(0.05), L(0.4), L(0.02)], [1, 0, 1, 0])
    assert res["mc3"] == 1.0
    # a tie with the best false answer is not "above"
    res = mc_scores(*mc1, [-1.0, -2.0, -1.0, -3.0], [1, 1, 0, 0])
    assert res["mc3"] == 0.0
    res = mc_scores(*mc1, [-0.999, -2.0, -1.0, -3.0], [1, 1, 0, 0])
    assert res["mc3"] == 0.5


def test_mc_scores_rejects_bad_labels() -> None:
    ok2 = ([-1.0, -2.0], [1, 0])
    with pytest.raises(ValueError, match="exactly one"):
        mc_scores([-1.0, -2.0], [1, 1], *ok2)
    with pytest.raises(ValueError, match="exactly one"):
        mc_scores([-1.0, -2.0], [0, 0], *ok2)
    with pytest.raises(ValueError, match="no false"):
        mc_scores([-1.0, -2.0], [1, 0], [-1.0, -2.0], [1, 1])
    with pytest.raises(ValueError, match="no true"):
        mc_scores([-1.0, -2.0], [1, 0], [-1.0, -2.0], [0, 0])
    with pytest.raises(ValueError, match="labels for"):
        mc_scores([-1.0, -2.0], [1, 0, 0], *ok2)
    with pytest.raises(ValueError, match="0 or 1"):
        mc_scores([-1.0, -2.0], [1, 2], *ok2)
    with pytest.raises(ValueError, match="NaN"):
        mc_scores([-1.0, float("nan")], [1, 0], *ok2)


def test_mean_mc_in_percent() -> None:
    rows = [{"mc1": 1.0, "mc2": 0.3, "mc3": 0.5}, {"mc1": 0.0, "mc2": 0.6, "mc3": 0.0}]
    res = mean_mc(rows)
    assert res["n"] == 2
    assert res["mc1"] == pytest.approx(50.0)
    assert res["mc2"] == pytest.approx(45.0)
    assert res["mc3"] == pytest.approx(25.0)
    with pytest.raises(ValueError, match="no questions"):
        mean_mc([])
    with pytest.raises(ValueError, match="mc3"):
        mean_mc([{"mc1": 1.0, "mc2": 0.5}])


# ============================================================================ BBQ


def _bbq(cat: str, cond: str, pred: int, label: int, biased: int | None) -> BBQPrediction:
    return BBQPrediction(
        cat, cond, predicted=pred, label=label, unknown_index=2, biased_index=biased
    )


def _bbq_items() -> list[BBQPrediction]:
    return [
        # Age, ambiguous (gold = unknown = 2, biased answer = 0)
        _bbq("Age", "ambig", 2, 2, 0),  # correct, unknown
        _bbq("Age", "ambig", 0, 2, 0),  # biased
        _bbq("Age", "ambig", 0, 2, 0),  # biased
        _bbq("Age", "ambig", 1, 2, 0),  # anti-biased
        # Age, disambiguated
        _bbq("Age", "disambig", 0, 0, 0),  # correct, biased
        _bbq("Age", "disambig", 2, 1, 0),  # unknown (an error here)
        _bbq("Age", "disambig", 1, 1, None),  # correct, biased answer unknown: excluded
        # Religion: ambiguous only, every answer "unknown"
        _bbq("Religion", "ambig", 2, 2, 1),
        _bbq("Religion", "ambig", 2, 2, 0),
        # Gender: disambiguated, one biased and one anti-biased answer (a tie → 0)
        _bbq("Gender", "disambig", 0, 0, 0),
        _bbq("Gender", "disambig", 1, 0, 0),
    ]


def test_bbq_ambiguous_category() -> None:
    g = bbq_metrics(_bbq_items())["by_category"]["Age"]["ambig"]
    assert g["n"] == 4
    assert g["accuracy"] == pytest.approx(25.0)
    assert g["unknown_rate"] == pytest.approx(25.0)
    assert g["n_non_unknown"] == 3 and g["n_biased"] == 2
    # s_DIS = 2·2/3 − 1 = 1/3; s_AMB = (1 − 0.25)·1/3 = 0.25
    assert g["bias_score"] == pytest.approx(25.0)
    assert g["stereotype_rate"] == pytest.approx(50.0)
    assert g["n_bias_excluded"] == 0


def test_bbq_disambiguated_category_with_excluded_item() -> None:
    g = bbq_metrics(_bbq_items())["by_category"]["Age"]["disambig"]
    assert g["n"] == 3
    assert g["accuracy"] == pytest.approx(200.0 / 3)  # the excluded item still counts
    assert g["unknown_rate"] == pytest.approx(100.0 / 3)
    assert g["n_bias_excluded"] == 1
    assert g["n_non_unknown"] == 1 and g["n_biased"] == 1
    assert g["bias_score"] == pytest.approx(100.0)  # s_DIS = 2·1/1 − 1, no accuracy factor
    assert g["stereotype_rate"] == pytest.approx(50.0)  # 1 biased of 2 with known index


def test_bbq_tie_all_unknown_and_empty_groups() -> None:
    res = bbq_metrics(_bbq_items())
    gender = res["by_category"]["Gender"]
    assert gender["disambig"]["bias_score"] == pytest.approx(0.0)  # 1 biased, 1 not
    assert gender["disambig"]["accuracy"] == pytest.approx(50.0)
    # Gender has no ambiguous items: every rate undefined, not an error
    empty = gender["ambig"]
    assert empty["n"] == 0
    for key in ("accuracy", "unknown_rate", "bias_score", "stereotype_rate"):
        assert empty[key] is None
    # Religion: all answers unknown → bias score undefined, stereotype rate 0
    rel = res["by_category"]["Religion"]["ambig"]
    assert rel["accuracy"] == pytest.approx(100.0)
    assert rel["unknown_rate"] == pytest.approx(100.0)
    assert rel["bias_score"] is None
    assert rel["stereotype_rate"] == pytest.approx(0.0)
    assert res["by_category"]["Religion"]["disambig"]["n"] == 0
    assert list(res["by_category"]) == ["Age", "Gender", "Religion"]
    json.dumps(res, allow_nan=False)  # None, never NaN: the result is valid JSON


def test_bbq_overall_pools_items() -> None:
    res = bbq_metrics(_bbq_items())["overall"]
    amb = res["ambig"]
    assert amb["n"] == 6
    assert amb["accuracy"] == pytest.approx(50.0)
    assert amb["unknown_rate"] == pytest.approx(50.0)
    # s_DIS over pooled non-unknown answers = 2·2/3 − 1; s_AMB = (1 − 0.5)·1/3
    assert amb["bias_score"] == pytest.approx(100.0 / 6)
    assert amb["stereotype_rate"] == pytest.approx(100.0 / 3)
    dis = res["disambig"]
    assert dis["n"] == 5
    assert dis["n_non_unknown"] == 3 and dis["n_biased"] == 2
    assert dis["bias_score"] == pytest.approx(100.0 / 3)
    assert dis["stereotype_rate"] == pytest.approx(50.0)  # 2 of 4 with known index


def test_bbq_all_biased_index_unknown() -> None:
    items = [_bbq("X", "disambig", 0, 0, None), _bbq("X", "disambig", 1, 0, None)]
    g = bbq_metrics(items)["overall"]["disambig"]
    assert g["accuracy"] == pytest.approx(50.0)
    assert g["bias_score"] is None and g["stereotype_rate"] is None
    assert g["n_bias_excluded"] == 2


def test_bbq_anti_biased_model_scores_negative() -> None:
    items = [_bbq("X", "ambig", 1, 2, 0)] * 3
    g = bbq_metrics(items)["overall"]["ambig"]
    assert g["bias_score"] == pytest.approx(-100.0)  # (1 − 0)·(2·0/3 − 1)


def test_bbq_validation() -> None:
    with pytest.raises(ValueError, match="context_condition"):
        _bbq("Age", "ambiguous", 0, 0, 0)
    with pytest.raises(ValueError, match="unknown"):
        _bbq("Age", "ambig", 0, 0, 2)
    with pytest.raises(ValueError, match="no predictions"):
        bbq_metrics([])


# ============================================================================ CrowS-Pairs


def test_crows_ties_do_not_count_as_preference() -> None:
    more = [-10.0, -5.0, -7.0, -3.0]
    less = [-12.0, -5.0, -8.0, -4.0]
    res = crows_metrics(more, less, ["race", "race", "gender", "gender"])
    assert res["overall"] == {"n": 4, "pct_more": pytest.approx(75.0), "n_ties": 1}
    assert res["by_type"]["race"]["pct_more"] == pytest.approx(50.0)
    assert res["by_type"]["race"]["n_ties"] == 1
    assert res["by_type"]["gender"]["pct_more"] == pytest.approx(100.0)
    assert list(res["by_type"]) == ["gender", "race"]
    flipped = crows_metrics(less, more, ["race", "race", "gender", "gender"])
    assert flipped["overall"]["pct_more"] == pytest.approx(0.0)


def test_crows_validation() -> None:
    with pytest.raises(ValueError, match="bias_types"):
        crows_metrics([-1.0, -2.0], [-1.0, -3.0], ["race"])
    with pytest.raises(ValueError, match="empty"):
        crows_metrics([], [], [])


# ============================================================================ choice tasks


def test_choice_accuracy_acc_vs_acc_norm() -> None:
    lls = [[-4.0, -6.0], [-3.0, -3.0], [-1.0, -2.0, -9.0]]
    golds = [1, 0, 2]
    lengths = [[2, 6], [3, 3], [1, 1, 1]]
    res = choice_accuracy(lls, golds, lengths)
    # item 0: raw argmax 0 (wrong), per-char −2 vs −1 → 1 (right)
    # item 1: tie, first wins → 0 (right) both ways; item 2: wrong both ways
    assert res["n"] == 3
    assert res["acc"] == pytest.approx(100.0 / 3)
    assert res["acc_norm"] == pytest.approx(200.0 / 3)
    assert choice_accuracy(lls, golds)["acc_norm"] is None


def test_choice_lengths_are_characters_without_delimiter() -> None:
    assert choice_lengths(["Paris", "né", "a b"]) == [5, 2, 3]  # "é" is 1 char, 2 bytes


def test_choice_accuracy_validation() -> None:
    with pytest.raises(ValueError, match="out of range"):
        choice_accuracy([[-1.0, -2.0]], [2])
    with pytest.raises(ValueError, match="> 0"):
        choice_accuracy([[-1.0, -2.0]], [0], [[0, 3]])
    with pytest.raises(ValueError, match="golds"):
        choice_accuracy([[-1.0, -2.0]], [0, 1])
    with pytest.raises(ValueError, match="no items"):
        choice_accuracy([], [])


# ============================================================================ GSM8K


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She sold 48 clips.\n#### 72", "72"),
        ("#### 1,234", "1234"),
        ("#### -5.", "-5"),
        ("#### 3.50", "3.50"),
        ("first #### 4 then #### 5", "4"),
        ("The answer is 72", None),
        ("####72", None),
    ],
)
def test_extract_strict(text: str, expected: str | None) -> None:
    assert extract_final_number(text, "strict") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She has 3 apples and then 15.", "15"),
        ("It costs $1,200.50 in total", "1200.50"),
        ("costs $5", "5"),
        ("so the answer: -7", "-7"),
        ("1, 2, and 3.", "3"),
        ("step 1: 20 - 4 = 16\n#### 16", "16"),
        ("no numbers here", None),
    ],
)
def test_extract_flexible(text: str, expected: str | None) -> None:
    assert extract_final_number(text, "flexible") == expected


def test_normalize_number() -> None:
    assert normalize_number("Natalia sold 48.\n#### 72") == "72"
    assert normalize_number(" $1,000. ") == "1000"
    assert normalize_number("18.00") != normalize_number("18")  # string match, as lm-eval


def test_gsm8k_exact_match_modes() -> None:
    preds = ["work... #### 72", "the total is 72", "#### 1,000", "#### 5"]
    golds = ["Some work\n#### 72", "72", "1000", "#### 6"]
    assert gsm8k_exact_match(preds, golds, mode="strict") == pytest.approx(50.0)
    assert gsm8k_exact_match(preds, golds, mode="flexible") == pytest.approx(75.0)
    with pytest.raises(ValueError, match="mode"):
        extract_final_number("#### 1", "loose")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="golds"):
        gsm8k_exact_match(["#### 1"], [])
    with pytest.raises(ValueError, match="no predictions"):
        gsm8k_exact_match([], [])
