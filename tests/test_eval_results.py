"""The result objects of the evaluators write the ``sea eval`` folder layout."""

import json

from spectral_edit.evaluate.bbq import BBQResult
from spectral_edit.evaluate.choice import ChoiceTaskResult
from spectral_edit.evaluate.control import ControlResult, SkippedTask
from spectral_edit.evaluate.crows_pairs import CrowsPairsResult
from spectral_edit.evaluate.gsm8k import GSM8KResult
from spectral_edit.evaluate.truthfulqa import TruthfulQAResult


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_benchmark_results_write_records_and_summary(tmp_path):
    rows = [{"question": "Où ? 真相", "mc1": 1.0}, {"question": "b", "mc1": 0.0}]
    tqa = TruthfulQAResult(rows, {"n": 2, "mc1": 50.0})
    folder = tqa.write(tmp_path / "tqa", {"model": "m", "fold": None})
    assert _lines(folder / "per_question.jsonl") == rows
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    assert list(summary) == ["n", "mc1", "model", "fold"] and summary["fold"] is None
    assert "真相" in (folder / "per_question.jsonl").read_text(encoding="utf-8")
    for result, name in (
        (BBQResult([{"a": 1}], {"n": 1}), "per_item.jsonl"),
        (CrowsPairsResult([{"a": 2}], {"n": 1}), "per_pair.jsonl"),
    ):
        out = result.write(tmp_path / name)
        assert sorted(p.name for p in out.iterdir()) == sorted([name, "summary.json"])
        assert json.loads((out / "summary.json").read_text()) == {"n": 1}


def test_control_result_summary_and_write(tmp_path):
    results = {
        "arc_easy": ChoiceTaskResult([{"index": 0}], {"task": "arc_easy", "n": 1, "acc": 100.0}),
        "gsm8k": GSM8KResult([{"index": 5}], {"task": "gsm8k", "n": 1, "strict_match": 0.0}),
        "boolq": ChoiceTaskResult([{"index": 0}], {"task": "boolq", "n": 1, "acc": 0.0}),
        "mmlu": SkippedTask("mmlu", "not here"),
    }
    control = ControlResult(results, seconds=1.5)
    assert control.average == {"acc": 50.0, "tasks": ["arc_easy", "boolq"]}
    assert list(control.tasks) == ["arc_easy", "gsm8k", "boolq", "mmlu"]
    assert control.tasks["mmlu"] == {"task": "mmlu", "skipped": "not here"}
    assert control.per_item["mmlu"] == [] and control.per_item["gsm8k"] == [{"index": 5}]
    assert list(control.summary) == ["tasks", "average", "seconds"]
    out = control.write(tmp_path / "control")
    assert [p.name for p in out.iterdir()] == ["summary.json"]
    assert json.loads((out / "summary.json").read_text()) == control.summary
    assert ControlResult({}, 0.0).average == {"acc": None, "tasks": []}
