"""Control-task evaluators: choice tasks follow the scorer (acc / acc_norm as lm-eval),
GSM8K builds the few-shot prompt and scores completions, and the runner reads a data dir.
Tiny model, hand-written fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import spectral_edit.evaluate.choice as choice_eval
import spectral_edit.evaluate.gsm8k as gsm8k_eval
from spectral_edit.data.control import ChoiceItem, GSM8KItem, load_control_task, load_gsm8k
from spectral_edit.data.errors import DataFileMissing
from spectral_edit.evaluate.choice import choice_requests, evaluate_choice_task
from spectral_edit.evaluate.control import evaluate_control
from spectral_edit.evaluate.gsm8k import evaluate_gsm8k
from spectral_edit.evaluate.scorer import ChoiceRequest, ContinuationScore, score_requests

from .tiny_models import first_argmax

DATA = Path(__file__).parent / "fixtures" / "data"
GSM8K_FIXTURE = DATA / "eval_control" / "gsm8k_test.jsonl"  # 7 items


def _pair_logprobs(model, tok, item: ChoiceItem) -> list[float]:
    """Each (context, continuation) pair as its own request: independent of the evaluator."""
    requests = [ChoiceRequest(ctx, (cont,)) for ctx, cont in item.pairs]
    return [s[0].logprob for s in score_requests(model, tok, requests)]


# =========================================================================== choice tasks


def test_choice_requests_layout() -> None:
    single = ChoiceItem("t", ("ctx",), (" a", " b", " c"), 2)
    multi = ChoiceItem("w", ("left one", "left two"), (" rest",), 0)
    requests, index = choice_requests([single, multi, single])
    assert requests == [
        ChoiceRequest("ctx", (" a", " b", " c")),
        ChoiceRequest("left one", (" rest",)),
        ChoiceRequest("left two", (" rest",)),
        ChoiceRequest("ctx", (" a", " b", " c")),
    ]
    assert index == [[0], [1, 2], [3]]


@pytest.mark.parametrize("task", ["arc_easy", "mmlu"])
def test_single_context_task_follows_scorer(tiny_llama, task) -> None:
    model, tok = tiny_llama
    items = load_control_task(task, DATA)
    result = evaluate_choice_task(model, tok, items, batch_size=2)
    correct = correct_norm = 0
    for item, rec in zip(items, result.per_item, strict=True):
        lls = _pair_logprobs(model, tok, item)
        assert rec["logprobs"] == pytest.approx(lls, abs=1e-4)
        assert rec["predicted"] == first_argmax(lls)
        lengths = [len(c.removeprefix(" ")) for c in item.continuations]
        assert rec["lengths"] == lengths
        assert rec["predicted_norm"] == first_argmax(
            [v / n for v, n in zip(lls, lengths, strict=True)]
        )
        correct += rec["predicted"] == item.gold
        correct_norm += rec["predicted_norm"] == item.gold
    assert result.summary["task"] == task
    assert result.summary["n"] == len(items)
    assert result.summary["acc"] == pytest.approx(100 * correct / len(items))
    assert result.summary["acc_norm"] == pytest.approx(100 * correct_norm / len(items))


def test_multi_context_task_follows_scorer(tiny_llama) -> None:
    model, tok = tiny_llama
    items = load_control_task("winogrande", DATA)
    assert all(len(i.contexts) == 2 for i in items)
    result = evaluate_choice_task(model, tok, items)
    correct = 0
    for item, rec in zip(items, result.per_item, strict=True):
        lls = _pair_logprobs(model, tok, item)
        assert rec["logprobs"] == pytest.approx(lls, abs=1e-4)
        assert rec["predicted"] == first_argmax(lls)
        correct += rec["predicted"] == item.gold
    assert result.summary["acc"] == pytest.approx(100 * correct / len(items))
    assert result.summary["acc_norm"] is None


def test_acc_norm_uses_characters_without_the_leading_space(monkeypatch) -> None:
    # lls -1.0 and -1.9; lengths w/o space 1 and 2 -> -1.0 vs -0.95 (norm picks 1)
    # (with the space, 2 and 3 -> -0.5 vs -0.63 would pick 0); acc picks 0
    table = {" a": (-1.0, 1), " bb": (-1.9, 1)}

    def fake(model, tokenizer, requests, **kwargs):
        return [[ContinuationScore(*table[c], False) for c in r.continuations] for r in requests]

    monkeypatch.setattr(choice_eval, "score_requests", fake)
    items = [ChoiceItem("t", ("q",), (" a", " bb"), 1), ChoiceItem("t", ("q",), (" a", " bb"), 0)]
    result = evaluate_choice_task(None, None, items)
    assert [r["predicted"] for r in result.per_item] == [0, 0]
    assert [r["predicted_norm"] for r in result.per_item] == [1, 1]
    assert result.summary["acc"] == 50.0 and result.summary["acc_norm"] == 50.0


def test_choice_task_passes_shared_prefix(monkeypatch) -> None:
    got = {}

    def fake(model, tokenizer, requests, **kwargs):
        got.update(kwargs)
        return [[ContinuationScore(-1.0, 1, True) for _ in r.continuations] for r in requests]

    monkeypatch.setattr(choice_eval, "score_requests", fake)
    evaluate_choice_task(
        None, None, [ChoiceItem("t", ("P: q",), (" x", " y"), 0)], shared_prefix="P:", batch_size=3
    )
    assert got["shared_prefix"] == "P:" and got["batch_size"] == 3


def test_choice_task_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="no items"):
        evaluate_choice_task(None, None, [])
    mixed = [ChoiceItem("t", ("c",), (" a", " b"), 0), ChoiceItem("t", ("c", "d"), (" a",), 0)]
    with pytest.raises(ValueError, match="mix"):
        evaluate_choice_task(None, None, mixed)


# =========================================================================== GSM8K


def _stub_generator(answers: dict[str, str], calls: list[dict]):
    """A generate_greedy stand-in: the completion is looked up by the prompt's last question."""

    def fake(model, tokenizer, prompts, **kwargs):
        calls.append({"prompts": list(prompts), **kwargs})
        out = []
        for prompt in prompts:
            question = prompt.rsplit("Question: ", 1)[1].split("\nAnswer:", 1)[0]
            out.append(answers[question])
        return out

    return fake


def test_gsm8k_prompt_exemplars_and_exact_match(monkeypatch) -> None:
    items = load_gsm8k(GSM8K_FIXTURE)
    assert len(items) == 7
    evaluated = items[2:]
    completions = {
        evaluated[0].question: " 3 tickets cost 36.\n#### 36",  # strict and flexible
        evaluated[1].question: " That is 2,500 daisies.",  # flexible only
        evaluated[2].question: " 5 * 2 = 10\n#### 12",  # both wrong
        evaluated[3].question: " 8 - 3 = 5 slices.\n#### 5.",  # both right
        evaluated[4].question: " I do not know.",  # neither
    }
    calls: list[dict] = []
    monkeypatch.setattr(gsm8k_eval, "generate_greedy", _stub_generator(completions, calls))
    result = evaluate_gsm8k(None, None, items, n_shot=2, max_new_tokens=33, batch_size=3)

    (call,) = calls
    prefix = "".join(f"Question: {e.question}\nAnswer: {e.answer}\n\n" for e in items[:2])
    assert call["prompts"] == [f"{prefix}Question: {it.question}\nAnswer:" for it in evaluated]
    assert "Question:" in call["stops"] and call["max_new_tokens"] == 33
    assert call["batch_size"] == 3
    # the exemplars are never evaluated
    assert [r["index"] for r in result.per_item] == [2, 3, 4, 5, 6]
    assert [r["correct_strict"] for r in result.per_item] == [True, False, False, True, False]
    assert [r["correct_flexible"] for r in result.per_item] == [True, True, False, True, False]
    assert result.per_item[1]["pred_flexible"] == "2500"
    assert result.per_item[2]["pred_strict"] == "12"
    assert result.summary["strict_match"] == pytest.approx(40.0)
    assert result.summary["flexible_match"] == pytest.approx(60.0)
    assert result.summary["n"] == 5 and result.summary["exemplar_indices"] == [0, 1]


def test_gsm8k_limit_seed_and_errors(monkeypatch) -> None:
    items = load_gsm8k(GSM8K_FIXTURE)
    calls: list[dict] = []
    answers = {it.question: " #### 0" for it in items}
    monkeypatch.setattr(gsm8k_eval, "generate_greedy", _stub_generator(answers, calls))
    result = evaluate_gsm8k(None, None, items, n_shot=3, limit=2)
    assert [r["index"] for r in result.per_item] == [3, 4]
    seeded = evaluate_gsm8k(None, None, items, n_shot=3, seed=7)
    shots = seeded.summary["exemplar_indices"]
    assert len(set(shots)) == 3
    assert {r["index"] for r in seeded.per_item} == set(range(7)) - set(shots)
    assert (
        seeded.summary["exemplar_indices"]
        == evaluate_gsm8k(None, None, items, n_shot=3, seed=7).summary["exemplar_indices"]
    )
    zero = evaluate_gsm8k(None, None, items, n_shot=0, limit=1)
    assert calls[-1]["prompts"] == [f"Question: {items[0].question}\nAnswer:"]
    assert zero.summary["n"] == 1
    with pytest.raises(ValueError, match="exemplars"):
        evaluate_gsm8k(None, None, items, n_shot=7)
    with pytest.raises(ValueError):
        evaluate_gsm8k(None, None, items, limit=-1)


def test_gsm8k_runs_real_generation(tiny_llama) -> None:
    model, tok = tiny_llama
    items = load_gsm8k(GSM8K_FIXTURE)[:3]
    result = evaluate_gsm8k(model, tok, items, n_shot=1, max_new_tokens=6, batch_size=2)
    assert result.summary["n"] == 2
    for rec in result.per_item:
        assert isinstance(rec["completion"], str) and "Question:" not in rec["completion"]
        assert rec["correct_strict"] in (True, False)


# =========================================================================== runner


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("SEA_OFFLINE", "1")
    (tmp_path / "control").mkdir()
    for name in ("arc_easy.jsonl", "winogrande.jsonl", "boolq.jsonl"):
        shutil.copy(DATA / "control" / name, tmp_path / "control" / name)
    shutil.copy(GSM8K_FIXTURE, tmp_path / "control" / "gsm8k_test.jsonl")
    return tmp_path


def test_evaluate_control_on_a_data_dir(tiny_llama, data_dir, monkeypatch) -> None:
    model, tok = tiny_llama
    answers = {it.question: f" #### {it.final}" for it in load_gsm8k(GSM8K_FIXTURE)}
    monkeypatch.setattr(gsm8k_eval, "generate_greedy", _stub_generator(answers, []))
    out = evaluate_control(
        model, tok, ["winogrande", "gsm8k", "arc_easy"], data_dir=data_dir, limit=2
    )
    assert list(out.tasks) == ["winogrande", "gsm8k", "arc_easy"]
    for name in ("winogrande", "arc_easy"):
        direct = evaluate_choice_task(model, tok, load_control_task(name, data_dir, limit=2))
        assert out.tasks[name]["n"] == 2
        assert out.tasks[name]["acc"] == direct.summary["acc"]
        assert out.tasks[name]["acc_norm"] == direct.summary["acc_norm"]
        assert len(out.per_item[name]) == 2
    gsm = out.tasks["gsm8k"]
    assert gsm["n"] == 2 and gsm["n_shot"] == 5 and gsm["strict_match"] == 100.0
    assert out.average["tasks"] == ["winogrande", "arc_easy"]
    mean = (out.tasks["winogrande"]["acc"] + out.tasks["arc_easy"]["acc"]) / 2
    assert out.average["acc"] == pytest.approx(mean)


def test_evaluate_control_errors(tiny_llama, data_dir) -> None:
    model, tok = tiny_llama
    with pytest.raises(KeyError, match="nope"):
        evaluate_control(model, tok, ["arc_easy", "nope"], data_dir=data_dir)
    with pytest.raises(ValueError, match="twice"):
        evaluate_control(model, tok, ["boolq", "boolq"], data_dir=data_dir)
    with pytest.raises(ValueError, match="no tasks"):
        evaluate_control(model, tok, [], data_dir=data_dir)
    with pytest.raises(DataFileMissing):
        evaluate_control(model, tok, ["piqa"], data_dir=data_dir)


def test_gsm8k_items_type() -> None:
    assert isinstance(load_gsm8k(GSM8K_FIXTURE)[3], GSM8KItem)
    assert load_gsm8k(GSM8K_FIXTURE)[3].final == "2500"
