"""Catalogue item 5, limits: one meaning for every count option and argument.

A count (``--limit``, ``--n-demos``, ``--per-fold``, ``--control-limit``, ``--kl-texts``,
``--batch-size``, ``--max-new-tokens``, ...) is a whole number >= 1; "all" is the option
left out, or the word ``all`` where the default is a number. ``0`` and ``-1`` never mean
"all" (``--limit -1`` once scored 816 of 817 questions, ``--n-demos -1`` fitted on 499):
the CLI refuses them at parse time naming the option, the API with a ``ValueError`` naming
the argument. The few counts where 0 means "none" (``--harm-texts``, ``--held-out-from``)
refuse negatives. ``sea demo`` checks its options (layers included) before any capture;
a text longer than the model's context is refused before the forward pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from spectral_edit.cli.common import count_parser
from spectral_edit.data.halueval import load_halueval_qa
from spectral_edit.data.splits import truthfulqa_folds, truthfulqa_questions, truthfulqa_rows
from spectral_edit.demos.builders import halueval_demos
from spectral_edit.evaluate.scorer import ChoiceRequest, score_requests
from spectral_edit.experiments import pipeline
from spectral_edit.experiments.demo_job import load_truthfulness_demos, truthfulness_demo
from spectral_edit.hf.capture import capture
from spectral_edit.hf.generation import generate_greedy
from spectral_edit.hf.tokens import SequenceTooLong, context_length
from tests.failures.refusals import assert_refused, run_cli
from tests.tiny_models import TINY_CONTEXT, make_tiny_model

FIXTURES = Path(__file__).parent.parent / "fixtures" / "data"
NO_MODEL = ["--model", "/nonexistent/model-folder"]
"""A model that cannot load: a count refused at parse time never gets to it."""

COUNT_OPTIONS: list[tuple[list[str], str, int]] = [
    (["eval", "truthfulqa"], "--limit", 1),
    (["eval", "truthfulqa"], "--batch-size", 1),
    (["eval", "bbq"], "--limit", 1),
    (["eval", "bbq"], "--held-out-from", 0),
    (["eval", "crows-pairs", "--file", "pairs.csv"], "--limit", 1),
    (["eval", "control"], "--limit", 1),
    (["eval", "harm"], "--limit", 1),
    (["eval", "harm"], "--max-tokens", 1),
    (["eval", "harm"], "--gen-tokens", 1),
    (["eval", "truthfulqa-gen"], "--limit", 1),
    (["eval", "truthfulqa-gen"], "--max-new-tokens", 1),
    (["generate", "hello"], "--max-new-tokens", 1),
    (["generate", "hello"], "--batch-size", 1),
    (["fit", "--demos", "d.jsonl", "--out", "e.safetensors"], "--batch-size", 1),
    (["demos", "halueval", "--out", "d.jsonl"], "--limit", 1),
    (["demos", "truthfulqa", "--fold", "1", "--out", "d.jsonl"], "--limit", 1),
    (["demos", "bbq", "--out", "d.jsonl"], "--n", 1),
    (["demo"], "--n-demos", 1),
    (["demo"], "--limit", 1),
    (["demo"], "--batch-size", 1),
    (["compare"], "--n-demos", 1),
    (["compare"], "--per-fold", 1),
    (["compare"], "--control-limit", 1),
    (["compare"], "--harm-texts", 0),
    (["compare"], "--harm-gen-tokens", 1),
    (["compare"], "--batch-size", 1),
    (["tune"], "--n-demos", 1),
    (["tune"], "--per-fold", 1),
    (["tune"], "--evaluations", 1),
    (["tune"], "--control-limit", 1),
    (["tune"], "--kl-texts", 1),
    (["tune"], "--kl-max-tokens", 1),
    (["tune"], "--batch-size", 1),
]


def _bad_values(least: int) -> list[str]:
    return [str(least - 1), "-1", "x", "2.5"] if least >= 1 else ["-1", "x"]


CASES = [
    pytest.param(command, option, value, id=f"{' '.join(command[:2])} {option} {value}")
    for command, option, least in COUNT_OPTIONS
    for value in dict.fromkeys(_bad_values(least))
]


@pytest.mark.parametrize(("command", "option", "value"), CASES)
def test_bad_count_is_refused_at_parse_time(command, option, value, tmp_path):
    model = [] if command[0] == "demos" else NO_MODEL  # `sea demos` loads no model
    result = run_cli([*command, *model, option, value], SEA_OFFLINE="1")
    output = assert_refused(result, option, value)
    assert "No such option" not in output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("least", "or_all"), [(1, False), (1, True), (0, False)])
def test_count_parser_one_rule(least, or_all):
    parse = count_parser(least, or_all=or_all)
    assert parse(str(least)) == least and parse("7") == 7 and parse(12) == 12
    for bad in _bad_values(least):
        with pytest.raises(typer.BadParameter, match=f">= {least}"):
            parse(bad)
    if or_all:
        assert parse("all") is None and parse(" ALL ") is None
    else:
        with pytest.raises(typer.BadParameter):
            parse("all")


def test_zero_control_limit_points_to_all(tmp_path):
    result = run_cli(["compare", *NO_MODEL, "--control-limit", "0", "--out", tmp_path / "o"])
    assert_refused(result, "--control-limit", "'all'")


# --------------------------------------------------------------------------- the API


@pytest.mark.parametrize("bad", [0, -1, True, 2.5])
def test_api_limits_name_the_argument(bad):
    with pytest.raises(ValueError, match="limit"):
        truthfulqa_questions("mc_task.json", FIXTURES, limit=bad)
    with pytest.raises(ValueError, match="limit"):
        truthfulqa_rows(FIXTURES, limit=bad)
    with pytest.raises(ValueError, match="per_fold"):
        truthfulqa_folds("mc_task.json", FIXTURES, per_fold=bad)
    items = load_halueval_qa(FIXTURES / "halueval" / "qa_data.json")
    with pytest.raises(ValueError, match="limit"):
        halueval_demos(items, limit=bad)
    with pytest.raises(ValueError, match="n_demos"):
        load_truthfulness_demos(bad, FIXTURES)


def test_api_limit_none_is_all_and_n_is_n():
    every = truthfulqa_questions("mc_task.json", FIXTURES)
    assert len(every) >= 2
    assert truthfulqa_questions("mc_task.json", FIXTURES, limit=1) == every[:1]
    items = load_halueval_qa(FIXTURES / "halueval" / "qa_data.json")
    assert len(halueval_demos(items)) == len(items) and len(halueval_demos(items, limit=1)) == 1


@pytest.mark.parametrize("bad", [0, -1])
def test_api_batch_sizes_and_token_counts_name_the_argument(bad, tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="batch_size"):
        score_requests(tiny_model, tiny_tokenizer, [ChoiceRequest("Q:", (" yes",))], batch_size=bad)
    with pytest.raises(ValueError, match="batch_size"):
        generate_greedy(tiny_model, tiny_tokenizer, ["Q:"], batch_size=bad)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_greedy(tiny_model, tiny_tokenizer, ["Q:"], max_new_tokens=bad)
    with pytest.raises(ValueError, match="batch_size"):
        capture(tiny_model, tiny_tokenizer, ["Q:"], [" yes"], layers=[0], batch_size=bad)


@pytest.mark.parametrize(
    ("argument", "value"), [("n_demos", 0), ("n_demos", -1), ("limit", 0), ("batch_size", 0)]
)
def test_api_demo_job_checks_counts_before_anything(argument, value, tmp_path):
    out = tmp_path / "demo"
    with pytest.raises(ValueError, match=argument):
        truthfulness_demo("/nonexistent/model", out_dir=out, **{argument: value})
    assert not out.exists()


# --------------------------------------------------------------------------- sea demo


@pytest.fixture()
def no_fit(monkeypatch):
    """``sea demo`` may not get to the fit (capture) stage: it fails the test if it does."""

    def fit_editor(*args, **kwargs):
        raise AssertionError("the fit ran before the options were checked")

    monkeypatch.setattr(pipeline, "fit_editor", fit_editor)


@pytest.mark.parametrize(
    ("layers", "fragments"),
    [("5,99", ["5,99", "3 layers"]), ("abc", ["abc", "last-L"]), ("last-99", ["last-99"])],
)
def test_demo_bad_layer_spec_is_refused_before_the_fit(
    layers, fragments, tiny_model_dir, tmp_path, no_fit
):
    out, data = tmp_path / "demo", tmp_path / "data"
    data.mkdir()
    args = ["demo", "--model", tiny_model_dir, "--layers", layers, "--data-dir", data]
    result = run_cli([*args, "--out", out], SEA_OFFLINE="1")
    assert_refused(result, *fragments)
    assert not (out / "editor.safetensors").exists() and not (out / "fit.json").exists()


@pytest.mark.parametrize(
    ("option", "value"), [("--pos-ratio", "1.5"), ("--neg-ratio", "0"), ("--n-demos", "0")]
)
def test_demo_bad_options_are_refused_before_anything(option, value, tmp_path, no_fit):
    out = tmp_path / "demo"
    result = run_cli(["demo", *NO_MODEL, option, value, "--out", out], SEA_OFFLINE="1")
    assert_refused(result, option)
    assert not out.exists()


# --------------------------------------------------------------------------- context length


LONG = "zq" * 3000
"""About 6000 tiny tokens: more than the tiny models' context of 4096."""


def test_context_length_is_the_configs(tiny_model):
    expected = 128 if tiny_model.config.model_type in ("gpt2", "opt") else TINY_CONTEXT
    assert context_length(tiny_model) == expected


@pytest.mark.parametrize("tiny_arch", ["llama", "gpt2"], indirect=True)
def test_api_text_longer_than_the_context_is_refused(tiny_model, tiny_tokenizer):
    limit = context_length(tiny_model)
    assert limit is not None and len(tiny_tokenizer(LONG)["input_ids"]) > limit
    calls = [
        lambda: generate_greedy(tiny_model, tiny_tokenizer, ["Q: hi", LONG], max_new_tokens=2),
        lambda: score_requests(tiny_model, tiny_tokenizer, [ChoiceRequest(LONG, (" yes",))]),
        lambda: capture(tiny_model, tiny_tokenizer, [LONG], [" yes"], layers=[0]),
    ]
    for call in calls:
        with pytest.raises(SequenceTooLong, match=f"context of {limit} tokens") as info:
            call()
        assert "shorten" in str(info.value)


@pytest.mark.parametrize("tiny_arch", ["llama"], indirect=True)
def test_generation_counts_the_new_tokens(tiny_model, tiny_tokenizer):
    prompt = "a " * (TINY_CONTEXT // 2 - 8)  # fits alone, not with the new tokens
    assert len(tiny_tokenizer(prompt)["input_ids"]) < TINY_CONTEXT
    with pytest.raises(SequenceTooLong, match="new tokens"):
        generate_greedy(tiny_model, tiny_tokenizer, [prompt], max_new_tokens=TINY_CONTEXT)


def test_cli_long_prompt_is_refused(tiny_model_dir):
    result = run_cli(["generate", "--model", tiny_model_dir, LONG])
    assert_refused(result, f"context of {TINY_CONTEXT} tokens", "shorten")


def test_a_model_without_a_known_context_is_not_checked():
    import torch

    assert context_length(torch.nn.Linear(2, 2)) is None
    model = make_tiny_model("llama")
    assert context_length(model) == TINY_CONTEXT
