"""The main job (``sea demo``) on a tiny model: stages, fallback, resume."""

import json
import shutil

from spectral_edit.core.options import SeaOptions
from spectral_edit.experiments.demo_job import truthfulness_demo
from spectral_edit.experiments.store import Store

FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures" / "data"


def test_stage_store_reuses_and_recomputes(tmp_path):
    store = Store(tmp_path)
    calls = []
    compute = lambda: calls.append(1) or {"value": len(calls)}  # noqa: E731
    assert store.run("s", {"a": 1}, compute) == {"value": 1}
    assert store.run("s", {"a": 1}, compute) == {"value": 1}  # reused
    assert store.run("s", {"a": 2}, compute) == {"value": 2}  # options changed
    (tmp_path / "s.json").write_text("{half written")
    assert store.run("s", {"a": 2}, compute) == {"value": 3}  # corrupt record: recompute


def test_demo_job_with_halueval_then_resume(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SEA_OFFLINE", "1")
    data = tmp_path / "data"
    (data / "halueval").mkdir(parents=True)
    shutil.copy(FIXTURES / "halueval" / "qa_data.json", data / "halueval" / "qa_one-turn_data.json")
    shutil.copytree(FIXTURES / "truthfulqa", data / "truthfulqa")
    out = tmp_path / "run"
    options = dict(
        out_dir=out, data_dir=data, n_demos=3, limit=2, mc_file="mc_task.json", batch_size=4
    )
    fit = SeaOptions(layers="last-2", centered=True, pos_ratio=0.9, neg_ratio=0.9)
    report = truthfulness_demo(str(tiny_model_dir), fit, **options).to_json()
    assert report["n_demonstrations"] == 3 and "HaluEval" in report["demonstrations"]
    assert report["n_questions"] == 2
    for name in (
        "report.md",
        "report.json",
        "editor.safetensors",
        "demos.jsonl",
        "truthfulqa_unedited.jsonl",
        "truthfulqa_edited.jsonl",
    ):
        assert (out / name).is_file(), name
    assert "MC1" in (out / "report.md").read_text()
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json*")}
    again = truthfulness_demo(str(tiny_model_dir), fit, **options).to_json()  # all reused
    assert again["edited"] == report["edited"] and again["unedited"] == report["unedited"]
    assert (out / "eval_edited.json").stat().st_mtime_ns == stamps["eval_edited.json"]
    # a different strength-relevant option reruns the fit and the edited evaluation only
    changed = truthfulness_demo(str(tiny_model_dir), fit.replace(pos_ratio=0.5), **options)
    changed = changed.to_json()
    assert (out / "eval_unedited.json").stat().st_mtime_ns == stamps["eval_unedited.json"]
    assert json.loads((out / "fit.json").read_text())["options"]["pos_ratio"] == 0.5
    assert changed["unedited"] == report["unedited"]


def test_demo_job_falls_back_to_shipped_demos(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SEA_OFFLINE", "1")
    report = truthfulness_demo(
        str(tiny_model_dir),
        SeaOptions(layers="last-1", neutral="prompt"),
        out_dir=tmp_path / "run",
        data_dir=tmp_path,
        n_demos=5,
        limit=1,
    ).to_json()
    assert report == {"fit": report["fit"], "evaluated": False}
    assert (tmp_path / "run" / "editor.safetensors").is_file()
    assert len((tmp_path / "run" / "demos.jsonl").read_text().splitlines()) == 5
