"""Demonstrations file, neutral answers, builders, greedy generation with stops."""

import json

import pytest
import torch

from spectral_edit.data import load_bbq, load_halueval_qa, load_truthfulqa_csv
from spectral_edit.demos.activations import capture_demos, neutral_answers
from spectral_edit.demos.builders import bbq_demos, halueval_demos, truthfulqa_demos
from spectral_edit.demos.format import DemoFormatError, Demonstration, read_demos, write_demos
from spectral_edit.demos.prompts import qa_prompt
from spectral_edit.experiments.demo_job import shipped_demos_path
from spectral_edit.hf.generation import generate_greedy, truncate_at_stops

from .tiny_models import make_tiny_model, make_tiny_tokenizer

FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures" / "data"


def test_round_trip_and_shipped_file(tmp_path):
    demos = [Demonstration("Q: a\nA:", "yes.", "no."), Demonstration("p", "x", "y", neutral="z")]
    path = write_demos(tmp_path / "d.jsonl", demos)
    assert read_demos(path) == demos
    shipped = read_demos(shipped_demos_path())
    assert len(shipped) >= 30


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "invalid JSON"),
        ('["a"]', "expected a JSON object"),
        ('{"prompt": "p", "positive": "x"}', "'negative'"),
        ('{"prompt": "p", "positive": "", "negative": "y"}', "'positive'"),
        ('{"prompt": "p", "positive": "x", "negative": "y", "neutral": 3}', "'neutral'"),
        ('{"prompt": "p", "positive": "x", "negative": "y", "extra": 1}', "unknown fields"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"prompt": "p", "positive": "x", "negative": "y"})
    path.write_text(f"{good}\n\n{line}\n")
    with pytest.raises(DemoFormatError, match=rf"bad.jsonl:3: .*{message}"):
        read_demos(path)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DemoFormatError, match="no such"):
        read_demos(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DemoFormatError, match="no demonstrations"):
        read_demos(tmp_path / "empty.jsonl")


def test_truncate_at_stops():
    assert truncate_at_stops(" Paris.\n\nQ: next", ("\n\n", "\nQ:")) == " Paris."
    assert truncate_at_stops(" a\nQ: b\n\nc", ("\n\n", "\nQ:")) == " a"
    assert truncate_at_stops("no stop", ("\n\n",)) == "no stop"


def test_batched_generation_equals_one_by_one():
    model = make_tiny_model("llama")
    tokenizer = make_tiny_tokenizer()
    prompts = ["the cat", "a much longer prompt about things", "q"]
    batched = generate_greedy(model, tokenizer, prompts, max_new_tokens=6, stops=(), batch_size=3)
    single = [
        generate_greedy(model, tokenizer, [p], max_new_tokens=6, stops=())[0] for p in prompts
    ]
    assert batched == single
    assert all(batched)
    # a stop string cuts the answer where it first appears
    first = batched[1]
    if len(first) > 2:
        stop = first[1:3]
        cut = generate_greedy(model, tokenizer, [prompts[1]], max_new_tokens=6, stops=(stop,))
        assert cut[0] == first[: first.find(stop)]


def test_neutral_modes_and_capture():
    model = make_tiny_model("qwen2")
    tokenizer = make_tiny_tokenizer()
    demos = [
        Demonstration("q: one\na:", "yes", "no", neutral="maybe"),
        Demonstration("q: two\na:", "up", "down", neutral=""),
    ]
    assert neutral_answers(model, tokenizer, demos, "prompt") == ["", ""]
    assert neutral_answers(model, tokenizer, demos, "given") == [" maybe", ""]
    with pytest.raises(ValueError, match="no neutral"):
        neutral_answers(model, tokenizer, [Demonstration("p", "x", "y")], "given")
    acts = capture_demos(model, tokenizer, demos, layers=[0, 1], neutral="prompt")
    assert acts.neutral.shape == acts.positive.shape == (2, 2, 32)
    assert not torch.allclose(acts.positive, acts.negative)


def test_halueval_builder(tmp_path):
    items = load_halueval_qa(FIXTURES / "halueval" / "qa_data.json")
    demos = halueval_demos(items, limit=2, seed=44)
    assert len(demos) == min(2, len(items))
    for demo in demos:
        assert demo.prompt.startswith("Q: What is human life expectancy")
        assert demo.prompt.endswith("\nA:") and demo.negative.endswith(".")
        source = next(i for i in items if qa_prompt(i.question) == demo.prompt)
        assert demo.negative[:-1] in source.hallucinated_answer
    assert halueval_demos(items, seed=44) == halueval_demos(items, seed=44)


def test_truthfulqa_and_bbq_builders():
    rows = load_truthfulqa_csv(FIXTURES / "truthfulqa" / "TruthfulQA.csv")
    demos = truthfulqa_demos(rows, seed=1)
    assert demos and all(
        d.positive.rstrip(".") in {r.best_answer.rstrip(".") for r in rows} for d in demos
    )
    bbq_file = next((FIXTURES / "bbq" / "official").glob("*.jsonl"))
    items = load_bbq(bbq_file)
    for item, demo in zip(items, bbq_demos(items, seed=3), strict=True):
        assert demo.positive == item.answers[item.label]
        assert demo.negative in item.answers and demo.negative != demo.positive
        assert item.question in demo.prompt
