"""Tests for the benchmark parsers on hand-written fixtures (tests/fixtures/data).

The fixtures imitate the upstream formats (same fields, encodings, line ends and quoting)
with invented content.  Malformed variants are written to ``tmp_path`` by the tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spectral_edit.data import (
    CONTROL_TASKS,
    QA_PRIMER,
    ChoiceItem,
    DataFileMissing,
    DataFormatError,
    GSM8KItem,
    biased_index,
    load_bbq,
    load_bbq_dir,
    load_control_task,
    load_crows_pairs,
    load_fold,
    load_gsm8k,
    load_halueval_qa,
    load_mc_task,
    load_mmlu_slice,
    load_query_choices,
    load_truthfulqa_csv,
    load_winogrande,
    normalize_question,
    split_mc_by_fold,
    unknown_index,
)
from spectral_edit.data.bbq import BBQItem

FIX = Path(__file__).parent / "fixtures" / "data"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEA_OFFLINE", "1")
    monkeypatch.delenv("SEA_DATA_DIR", raising=False)


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def _expect_error(loader, path: Path, line: int | None, *words: str) -> DataFormatError:  # noqa: ANN001
    with pytest.raises(DataFormatError) as info:
        loader(path)
    err = info.value
    assert err.path == path
    assert err.line == line
    msg = str(err)
    assert str(path) in msg
    if line is not None:
        assert f"{path}:{line}:" in msg
    for w in words:
        assert w in msg, (w, msg)
    return err


# =========================================================================== TruthfulQA


def test_qa_primer_shape() -> None:
    blocks = QA_PRIMER.split("\n\n")
    assert len(blocks) == 6
    for block in blocks:
        q, a = block.split("\n")
        assert q.startswith("Q: ") and a.startswith("A: ")
    assert QA_PRIMER.startswith("Q: What is human life expectancy in the United States?")
    assert QA_PRIMER.endswith("A: The 1992 Olympics were held in Barcelona, Spain.")
    assert not QA_PRIMER.endswith("\n")


def test_load_mc_task_keeps_order_and_labels() -> None:
    qs = load_mc_task(FIX / "truthfulqa" / "mc_task.json")
    raw = json.loads((FIX / "truthfulqa" / "mc_task.json").read_text())
    assert len(qs) == len(raw) == 4
    for q, r in zip(qs, raw, strict=True):
        assert q.question == r["question"]
        assert q.mc1_answers == tuple(r["mc1_targets"])
        assert q.mc1_labels == tuple(r["mc1_targets"].values())
        assert q.mc2_answers == tuple(r["mc2_targets"])
        assert sum(q.mc1_labels) == 1 and q.mc1_labels[q.mc1_true_index] == 1
        assert set(q.mc2_true) | set(q.mc2_false) == set(q.mc2_answers)
    assert qs[1].mc1_true_index == 1  # the true answer is not always first
    assert qs[0].mc2_true == ("The sky is blue on a cloudless day at noon.", "It is blue.")
    with pytest.raises(AttributeError):
        qs[0].question = "changed"  # type: ignore[misc]


def _mc_item(**over: object) -> dict:
    item: dict = {
        "question": "Is this invented?",
        "mc1_targets": {"Yes.": 1, "No.": 0},
        "mc2_targets": {"Yes.": 1, "No.": 0},
    }
    item.update(over)
    return item


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (_mc_item(mc1_targets={"Yes.": 1, "Also yes.": 1, "No.": 0}), ["exactly one true"]),
        (_mc_item(mc1_targets={"Yes.": 0, "No.": 0}), ["exactly one true"]),
        (_mc_item(mc2_targets={"Yes.": 1, "Sure.": 1}), ["mc2_targets", "false"]),
        (_mc_item(mc2_targets={"Yes.": 2, "No.": 0}), ["must be 0 or 1"]),
        (_mc_item(mc1_targets={"Yes.": True, "No.": 0}), ["must be 0 or 1"]),
        (_mc_item(mc1_targets=["Yes.", "No."]), ["mc1_targets"]),
        ({"question": "Q?", "mc1_targets": {"a": 1, "b": 0}}, ["missing field 'mc2_targets'"]),
        (_mc_item(question=7), ["'question'", "string"]),
    ],
)
def test_load_mc_task_rejects_bad_items(bad: dict, words: list[str], tmp_path: Path) -> None:
    good = json.dumps(_mc_item(), indent=2)
    text = "[\n" + good + ",\n" + json.dumps(bad, indent=2) + "\n]\n"
    p = tmp_path / "mc.json"
    p.write_text(text)
    bad_line = 2 + good.count("\n") + 1  # "[" line, the good item, then the bad one starts
    _expect_error(load_mc_task, p, bad_line, *words)


def test_load_mc_task_bad_json_and_duplicates(tmp_path: Path) -> None:
    p = tmp_path / "mc.json"
    p.write_text('[\n  {"question": "Q?",\n   "mc1_targets": {"a": 1 "b": 0}}\n]\n')
    _expect_error(load_mc_task, p, 3, "invalid JSON")
    p.write_text('[\n{"question": "Q?", "mc1_targets": {"a": 1, "a": 0}, "mc2_targets": {}}\n]')
    _expect_error(load_mc_task, p, 2, "duplicate key 'a'")
    p.write_text('{"question": "not an array"}')
    _expect_error(load_mc_task, p, 1, "JSON array")
    p.write_text("[]")
    assert load_mc_task(p) == []


def test_load_truthfulqa_csv_bom_crlf_and_answer_lists() -> None:
    path = FIX / "truthfulqa" / "TruthfulQA.csv"
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw  # the fixture is upstream-shaped
    rows = load_truthfulqa_csv(path)
    assert [r.type for r in rows] == ["Adversarial", "Non-Adversarial"] * 2
    first = rows[0]
    assert first.question == "What colour is the sky on a cloudless day at noon?"
    # ";"-split, pieces stripped, empty pieces dropped, commas inside a piece kept
    assert first.correct_answers == ("The sky is blue", "It is blue, mostly", "Blue")
    assert first.incorrect_answers == ("The sky is green", "The sky is always black")
    assert rows[2].source == ""
    assert rows[3].question == 'Which planet is known as the "red planet"?'
    assert rows[3].correct_answers == ("Mars", 'Mars is called the "red planet"')
    assert all(not r.type.startswith("\ufeff") for r in rows)


def test_folds_lf_no_bom_and_load_fold() -> None:
    f1 = load_fold(1, FIX)
    f2 = load_truthfulqa_csv(FIX / "truthfulqa" / "folds" / "TruthfulQA-2.csv")
    full = load_truthfulqa_csv(FIX / "truthfulqa" / "TruthfulQA.csv")
    assert len(f1) + len(f2) == len(full)
    assert {normalize_question(r.question) for r in f1 + f2} == {
        normalize_question(r.question) for r in full
    }
    with pytest.raises(ValueError):
        load_fold(3, FIX)


def test_load_fold_missing_dir_names_file(tmp_path: Path) -> None:
    with pytest.raises(DataFileMissing) as info:
        load_fold(2, tmp_path)
    assert "truthfulqa/folds/TruthfulQA-2.csv" in str(info.value)


def test_normalize_question() -> None:
    assert normalize_question("  Do  goldfish\thave\n a memory? ") == "Do goldfish have a memory?"
    assert normalize_question("Same") == "Same"
    assert normalize_question("A b") != normalize_question("a b")  # case is kept


def test_split_mc_by_fold_matches_whitespace_variants() -> None:
    mc = load_mc_task(FIX / "truthfulqa" / "mc_task.json")
    f1, f2 = load_fold(1, FIX), load_fold(2, FIX)
    s1, s2 = split_mc_by_fold(mc, f1), split_mc_by_fold(mc, f2)
    assert len(s1) + len(s2) == len(mc)
    assert not {q.question for q in s1} & {q.question for q in s2}
    # mc_task has "Do  goldfish ..." (two spaces); the fold row has tabs and extra spaces.
    assert any("goldfish" in q.question for q in s2)
    assert [q.question for q in s1] == [q.question for q in mc if q in s1]  # mc order kept
    assert split_mc_by_fold(mc, ['Which planet is known as the "red planet"?']) == [mc[3]]
    assert split_mc_by_fold(mc, []) == []


@pytest.mark.parametrize(
    ("edit", "line", "words"),
    [
        (lambda ls: [ls[0].replace("Best Answer,", "")] + ls[1:], 1, ["Best Answer"]),
        (lambda ls: ls[:2] + ["Adversarial,Cat,Only three fields"] + ls[2:], 3, ["3 fields"]),
        (lambda ls: ls[:1] + ["Adversarial,Cat,,Best,a;b,c,src"] + ls[1:], 2, ["'Question'"]),
        (lambda ls: ls[:1] + ["Adversarial,Cat,Q?,Best, ; ,c,src"] + ls[1:], 2, ["non-empty"]),
    ],
)
def test_load_truthfulqa_csv_malformed(edit, line: int, words: list[str], tmp_path: Path) -> None:  # noqa: ANN001
    src = _lines(FIX / "truthfulqa" / "folds" / "TruthfulQA-1.csv")
    p = _write(tmp_path, "bad.csv", edit(src))
    _expect_error(load_truthfulqa_csv, p, line, *words)


def test_load_truthfulqa_csv_line_numbers_after_multiline_field(tmp_path: Path) -> None:
    lines = [
        "Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source",
        'A,C,"A question that\nspans two lines?",B,x,y,s',
        "A,C,Short row",
    ]
    p = tmp_path / "ml.csv"
    p.write_text("\n".join(lines) + "\n")
    _expect_error(load_truthfulqa_csv, p, 4, "3 fields")


# =========================================================================== HaluEval


def test_load_halueval_qa() -> None:
    items = load_halueval_qa(FIX / "halueval" / "qa_data.json")
    assert len(items) == 3  # the blank line is skipped
    assert items[0].right_answer == "Ilse Varga"
    assert items[2].knowledge.startswith("Café Lumière")
    assert items[2].right_answer == "Montréal"
    assert all(i.question.endswith("?") for i in items)


@pytest.mark.parametrize(
    ("replacement", "words"),
    [
        ('{"knowledge": "k", "question": "q?", "right_answer": "a"}', ["hallucinated_answer"]),
        (
            '{"knowledge": "k", "question": "q?", "right_answer": 5, "hallucinated_answer": "b"}',
            ["'right_answer'", "string"],
        ),
        (
            '{"knowledge": "k", "question": "  ", "right_answer": "a", "hallucinated_answer": "b"}',
            ["'question'", "empty"],
        ),
        ('["not", "an", "object"]', ["JSON object"]),
        ('{"knowledge": "k", "question": "q?",', ["invalid JSON"]),
    ],
)
def test_load_halueval_qa_malformed(replacement: str, words: list[str], tmp_path: Path) -> None:
    src = _lines(FIX / "halueval" / "qa_data.json")
    src[3] = replacement  # physical line 4 (after the blank line 3)
    p = _write(tmp_path, "qa.json", src)
    _expect_error(load_halueval_qa, p, 4, *words)


# =========================================================================== BBQ


def _by_id(items: list[BBQItem]) -> dict[int, BBQItem]:
    return {i.example_id: i for i in items}


def test_load_bbq_fields() -> None:
    items = load_bbq(FIX / "bbq" / "official" / "Age.jsonl")
    assert [i.example_id for i in items] == [0, 1, 2]
    it = items[0]
    assert it.question_index == "1" and it.category == "Age"
    assert it.question_polarity == "neg" and it.context_condition == "ambig"
    assert it.answers == ("The retiree", "The teenager", "Not known")
    assert it.answer_groups == (("old",), ("nonOld",), ("unknown",))
    assert it.answer_info_texts == ("retiree", "teenager", "Not known")
    assert it.stereotyped_groups == ("old",)
    assert it.label == 2 == unknown_index(it)
    assert unknown_index(items[2]) == 0


def test_load_bbq_dir_selects_categories() -> None:
    folder = FIX / "bbq" / "official"
    everything = load_bbq_dir(folder)
    assert {i.category for i in everything} == {
        "Age",
        "Gender_identity",
        "Nationality",
        "Race_x_SES",
        "SES",
    }
    two = load_bbq_dir(folder, ["SES", "Age"])
    assert [i.category for i in two] == ["SES", "Age", "Age", "Age"]
    with pytest.raises(DataFileMissing, match="Religion.jsonl"):
        load_bbq_dir(folder, ["Religion"])


@pytest.mark.parametrize(
    ("example_id", "expected"),
    [
        (0, 0),  # neg, stereotyped "old" is ans0
        (1, 0),  # same question, disambiguated context: the biased option does not move
        (2, 1),  # nonneg: the non-unknown option that is NOT the stereotyped group
        (10, 0),  # "F" group against stereotyped "F"
        (11, 0),  # nonneg, "woman" matches "F", so the biased answer is the man
        (12, 1),  # "trans_F" matches "Transgender women"/"trans"; "nonTrans_M" does not
        (13, None),  # "woman" and "girl" both match "F": undecidable
        (20, 0),  # Nationality: groups are regions, the text "Zorbanian" matches; nonneg
        (30, None),  # intersectional: both options are Black, only SES differs
        (31, 1),  # "lowSES-F-Latino" matches "Latino"; nonneg -> the other option
        (40, 2),  # "lowSES" matches "low SES"
    ],
)
def test_biased_index(example_id: int, expected: int | None) -> None:
    items = _by_id(load_bbq_dir(FIX / "bbq" / "official"))
    item = items[example_id]
    got = biased_index(item)
    assert got == expected
    if got is not None:
        assert got != unknown_index(item)


def test_biased_index_flips_with_polarity() -> None:
    item = _by_id(load_bbq_dir(FIX / "bbq" / "official"))[0]
    flipped = BBQItem(**{**item.__dict__, "question_polarity": "nonneg"})
    assert {biased_index(item), biased_index(flipped), unknown_index(item)} == {0, 1, 2}


def test_unknown_index_requires_one_unknown() -> None:
    item = _by_id(load_bbq_dir(FIX / "bbq" / "official"))[0]
    broken = BBQItem(**{**item.__dict__, "answer_groups": (("old",), ("unknown",), ("unknown",))})
    with pytest.raises(ValueError, match="2 'unknown'"):
        unknown_index(broken)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda o: o.update(label=3), ["'label'", "out of range"]),
        (lambda o: o.update(label="2"), ["'label'", "integer"]),
        (lambda o: o.update(question_polarity="positive"), ["question_polarity", "positive"]),
        (lambda o: o.update(context_condition="vague"), ["context_condition"]),
        (lambda o: o.pop("answer_info"), ["answer_info"]),
        (lambda o: o["answer_info"].update(ans1=["teenager"]), ["answer_info['ans1']"]),
        (lambda o: o["answer_info"].update(ans1=["x", "unknown"]), ["exactly one 'unknown'"]),
        (lambda o: o["additional_metadata"].update(stereotyped_groups="old"), ["stereotyped"]),
        (lambda o: o.pop("ans2"), ["'ans2'"]),
        (lambda o: o.update(example_id=True), ["'example_id'"]),
    ],
)
def test_load_bbq_malformed(change, words: list[str], tmp_path: Path) -> None:  # noqa: ANN001
    src = _lines(FIX / "bbq" / "official" / "Age.jsonl")
    obj = json.loads(src[1])
    change(obj)
    src[1] = json.dumps(obj)
    p = _write(tmp_path, "Age.jsonl", src)
    _expect_error(load_bbq, p, 2, *words)


# =========================================================================== CrowS-Pairs


def test_load_crows_pairs_quoting_and_unicode() -> None:
    pairs = load_crows_pairs(FIX / "crows_pairs" / "crows_pairs_anonymized.csv")
    assert len(pairs) == 5
    assert pairs[0].sent_more == "Grandpa fumbled with the remote, as old people always do."
    assert pairs[1].sent_more == 'She said "the engineer" would fix it, and he did.'
    assert pairs[1].stereo_antistereo == "antistereo"
    assert pairs[2].sent_more.startswith("Zoë from Zürich")
    assert pairs[2].sent_less == "Zoë from Oslo was late again.  "  # sentences kept verbatim
    assert pairs[3].sent_more == "The tenants complained:\nthe poor family next door was noisy."
    assert [p.bias_type for p in pairs] == [
        "age",
        "gender",
        "nationality",
        "socioeconomic",
        "religion",
    ]


def test_load_crows_pairs_with_id_column(tmp_path: Path) -> None:
    src = _lines(FIX / "crows_pairs" / "crows_pairs_anonymized.csv")
    out = [",id," + src[0][1:]]
    for i, line in enumerate(src[1:]):
        head, sep, rest = line.partition(",")
        out.append(f"{head},{i + 1},{rest}" if sep and head.isdigit() else line)
    p = _write(tmp_path, "cp.csv", out)
    assert len(load_crows_pairs(p)) == 5


def test_load_crows_pairs_malformed(tmp_path: Path) -> None:
    src = _lines(FIX / "crows_pairs" / "crows_pairs_anonymized.csv")
    bad = list(src)
    bad[-1] = bad[-1].replace(",antistereo,", ",maybe,")
    p = _write(tmp_path, "cp.csv", bad)
    # row 3 spans lines 5-7 (two quoted fields with newlines), so the last row is line 8
    _expect_error(load_crows_pairs, p, 8, "stereo_antistereo", "maybe")
    bad = [src[0].replace(",bias_type", ",type")] + src[1:]
    p = _write(tmp_path, "cp2.csv", bad)
    _expect_error(load_crows_pairs, p, 1, "bias_type")
    bad = src[:2] + ['9,"only, two",fields'] + src[2:]
    p = _write(tmp_path, "cp3.csv", bad)
    _expect_error(load_crows_pairs, p, 3, "3 fields")
    bad = src[:2] + ["9,,Less.,stereo,age,[],a1,[]"]
    p = _write(tmp_path, "cp4.csv", bad)
    _expect_error(load_crows_pairs, p, 3, "'sent_more'", "empty")


# =========================================================================== control tasks


def test_query_choices_join_rule() -> None:
    items = load_control_task("arc_easy", FIX)
    assert len(items) == 3 and all(isinstance(i, ChoiceItem) for i in items)
    first = items[0]
    assert first.task == "arc_easy" and first.n_choices == 4 and first.gold == 1
    assert first.contexts == (
        "Question: Which tool should a student use to measure the length of a leaf?\nAnswer:",
    )
    assert first.continuations[1] == " a ruler"
    # trailing whitespace of the query is dropped before the cue
    assert items[2].contexts[0].endswith("water cycle?\nAnswer:")
    pairs = first.pairs
    assert len(pairs) == 4 and all(ctx == first.contexts[0] for ctx, _ in pairs)
    assert [c for _, c in pairs] == list(first.continuations)


@pytest.mark.parametrize(
    ("task", "context_end", "gold_text"),
    [
        ("piqa", "cast-iron pan?\nAnswer:", " Rub the pan with coarse salt"),
        ("boolq", "fenwick canal?\nAnswer:", " no"),
        ("openbook_qa", "will most likely", " turn pale"),
        ("commonsense_qa", "D. garden\nAnswer:", " B"),
    ],
)
def test_query_choices_tasks(task: str, context_end: str, gold_text: str) -> None:
    item = load_control_task(task, FIX)[0]
    assert isinstance(item, ChoiceItem)
    assert item.contexts[0].endswith(context_end)
    assert "\n\n" not in item.contexts[0]  # PIQA's trailing "\n" does not double up
    assert item.continuations[item.gold].startswith(gold_text)
    assert all(c.startswith(" ") and not c.startswith("  ") for c in item.continuations)


def test_winogrande_pairs() -> None:
    items = load_winogrande(FIX / "control" / "winogrande.jsonl")
    assert len(items) == 3
    it = items[0]
    assert it.n_choices == 2 and it.gold == 1 and it.continuations == (" was too small.",)
    assert it.pairs == (
        ("The trophy did not fit in the suitcase because the trophy", " was too small."),
        ("The trophy did not fit in the suitcase because the suitcase", " was too small."),
    )


def test_mmlu_prompt_and_answers() -> None:
    items = load_mmlu_slice(FIX / "control" / "mmlu_slice.jsonl")
    assert [i.gold for i in items] == [1, 2, 0, 3, 1]
    first = items[0]
    assert first.contexts == ("What is 7 multiplied by 6?\nA. 36\nB. 42\nC. 48\nD. 13\nAnswer:",)
    assert first.continuations == (" A", " B", " C", " D")
    assert items[1].contexts[0].startswith("Which gas do plants absorb")  # question stripped
    multi = items[2].contexts[0]
    assert "A. print('hello')\n # then exit\nB. echo('hello')" in multi


@pytest.mark.parametrize(
    ("obj", "words"),
    [
        ({"question": "Q?", "options": "A. 1\nB. 2", "answer": "B. 3"}, ["does not match"]),
        ({"question": "Q?", "options": "A. 1\nB. 2", "answer": "C"}, ["out of range"]),
        ({"question": "Q?", "options": "A. 1\nB. 2", "answer": 2}, ["out of range"]),
        ({"question": "Q?", "options": "B. 1\nC. 2", "answer": "B"}, ["start with 'A. '"]),
        ({"question": "Q?", "options": "A. only one", "answer": "A"}, ["at least 2"]),
        ({"question": "Q?", "options": "A. 1\nB. 2", "answer": "two"}, ["answer must be"]),
        ({"question": "Q?", "options": "A. 1\nB. 2"}, ["missing field 'answer'"]),
    ],
)
def test_mmlu_malformed(obj: dict, words: list[str], tmp_path: Path) -> None:
    src = _lines(FIX / "control" / "mmlu_slice.jsonl")
    src[2] = json.dumps(obj)
    p = _write(tmp_path, "mmlu.jsonl", src)
    _expect_error(load_mmlu_slice, p, 3, *words)


def test_gsm8k_final_answers() -> None:
    items = load_control_task("gsm8k", FIX)
    assert all(isinstance(i, GSM8KItem) for i in items)
    assert [i.final for i in items] == ["31", "1500", "-6"]
    assert items[1].answer.endswith("#### 1,500")


@pytest.mark.parametrize(
    ("loader", "fixture", "obj", "words"),
    [
        (
            load_query_choices,
            "arc_easy.jsonl",
            {"query": "Q", "choices": ["a", "b"], "gold": 2},
            ["'gold'", "out of range"],
        ),
        (
            load_query_choices,
            "arc_easy.jsonl",
            {"query": "Q", "choices": ["a"], "gold": 0},
            ["at least 2"],
        ),
        (
            load_query_choices,
            "arc_easy.jsonl",
            {"query": "Q", "choices": ["a", ""], "gold": 0},
            ["empty choice"],
        ),
        (
            load_query_choices,
            "arc_easy.jsonl",
            {"choices": ["a", "b"], "gold": 0},
            ["missing field 'query'"],
        ),
        (
            load_winogrande,
            "winogrande.jsonl",
            {"context_options": ["a", "b"], "continuation": "c", "gold": -1},
            ["out of range"],
        ),
        (
            load_winogrande,
            "winogrande.jsonl",
            {"context_options": "a b", "continuation": "c", "gold": 0},
            ["list of strings"],
        ),
        (load_gsm8k, "gsm8k_test.jsonl", {"question": "Q?", "answer": "no marker 5"}, ["'#### '"]),
        (load_gsm8k, "gsm8k_test.jsonl", {"question": "Q?", "answer": "x\n#### "}, ["empty"]),
    ],
)
def test_control_malformed(  # noqa: ANN001
    loader, fixture: str, obj: dict, words: list[str], tmp_path: Path
) -> None:
    src = _lines(FIX / "control" / fixture)
    src[1] = json.dumps(obj)
    p = _write(tmp_path, fixture, src)
    _expect_error(loader, p, 2, *words)


def test_control_bad_json_line(tmp_path: Path) -> None:
    src = _lines(FIX / "control" / "piqa.jsonl")
    p = _write(tmp_path, "piqa.jsonl", [src[0], "", '{"choices": ["a", "b"], "gold": 0,'])
    _expect_error(load_query_choices, p, 3, "invalid JSON")


def test_load_control_task_registry_limit_and_errors(tmp_path: Path) -> None:
    assert set(CONTROL_TASKS) >= {
        "arc_easy",
        "arc_challenge",
        "piqa",
        "openbook_qa",
        "commonsense_qa",
        "boolq",
        "winogrande",
        "mmlu",
        "gsm8k",
    }
    assert len(load_control_task("winogrande", FIX, limit=2)) == 2
    assert load_control_task("winogrande", FIX, limit=0) == []
    with pytest.raises(KeyError, match="known"):
        load_control_task("hellaswag", FIX)
    with pytest.raises(ValueError):
        load_control_task("winogrande", FIX, limit=-1)
    # arc_challenge is pinned upstream, but SEA_OFFLINE=1 forbids fetching it.
    with pytest.raises(DataFileMissing, match="control/arc_challenge.jsonl"):
        load_control_task("arc_challenge", tmp_path)


def test_choice_item_invariants() -> None:
    with pytest.raises(ValueError):
        ChoiceItem("t", ("ctx",), (" only one",), 0)
    with pytest.raises(ValueError):
        ChoiceItem("t", ("a", "b"), (" x", " y"), 0)
    with pytest.raises(ValueError):
        ChoiceItem("t", ("ctx",), (" a", " b"), 2)
    item = ChoiceItem("t", ("a", "b", "c"), (" end",), 2)
    assert item.n_choices == 3 and item.pairs[2] == ("c", " end")


def test_json_lines_crlf_and_unicode_line_separator(tmp_path: Path) -> None:
    # U+2028 is legal unescaped inside a JSON string and must not split the record.
    rec = {
        "knowledge": "a\u2028b",
        "question": "q?",
        "right_answer": "r",
        "hallucinated_answer": "h",
    }
    p = tmp_path / "qa.json"
    p.write_bytes((json.dumps(rec, ensure_ascii=False) + "\r\n\r\n").encode() * 2)
    items = load_halueval_qa(p)
    assert len(items) == 2 and items[0].knowledge == "a\u2028b"
