"""``sea compare`` end to end on a tiny model: report, fold protocol, failures, resume."""

import dataclasses
import json
import math
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spectral_edit.cli.app import app
from spectral_edit.data import load_fold, load_mc_task
from spectral_edit.data.truthfulqa import split_mc_by_fold
from spectral_edit.demos.format import Demonstration, write_demos
from spectral_edit.experiments.compare import run_compare
from spectral_edit.experiments.compare_results import CompareOptions
from spectral_edit.experiments.methods import METHODS, Intervention, MethodSpec, parse_methods
from spectral_edit.experiments.overhead import tokens_processed
from spectral_edit.experiments.settings import setting_id

from .tiny_models import make_tiny_model, make_tiny_tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def _quiet(message: str) -> None:
    """No progress messages."""


DEMOS = [Demonstration(f"q: thing {i}\na:", f"yes it is {i}", f"no never {i}") for i in range(12)]
OPTIONS = CompareOptions(
    methods=("none", "mean-diff", "broken", "dola"),
    control_tasks=("arc_easy", "boolq", "gsm8k"),
    control_limit=2,
    neutral="prompt",
    both_directions=True,
)


@pytest.fixture()
def data_dir(tmp_path):
    """The fixtures with a GSM8K file large enough for its 5 exemplars plus 2 items."""
    folder = tmp_path / "data"
    shutil.copytree(FIXTURES, folder)
    shutil.copy(FIXTURES / "eval_control" / "gsm8k_test.jsonl", folder / "control")
    return folder


def _folds():
    questions = load_mc_task(FIXTURES / "truthfulqa" / "mc_task.json")
    return {f: split_mc_by_fold(questions, load_fold(f, FIXTURES)) for f in (1, 2)}


def _registry(fail: bool, calls: list[str]):
    def configure(state, setting, ctx):
        calls.append(setting_id(setting))
        if fail:
            raise RuntimeError("planted failure")
        return Intervention()

    broken = MethodSpec("broken", "fails on demand", ({"x": 1},), lambda ctx: None, configure)
    counted = dataclasses.replace(
        METHODS["mean-diff"],
        configure=lambda st, s, c: (
            calls.append(f"mean-diff {setting_id(s)}") or METHODS["mean-diff"].configure(st, s, c)
        ),
    )
    return {**METHODS, "mean-diff": counted, "broken": broken}


def test_compare_reports_fails_per_method_and_resumes(tmp_path, data_dir):
    model, tokenizer = make_tiny_model("llama"), make_tiny_tokenizer()
    folds, calls = _folds(), []
    report = run_compare(
        model,
        tokenizer,
        DEMOS,
        folds,
        OPTIONS,
        tmp_path,
        data_dir=data_dir,
        model_name="tiny",
        registry=_registry(True, calls),
        echo=_quiet,
    ).to_json()
    rows = report["methods"]
    assert rows["broken"] == {"error": "RuntimeError: planted failure"}
    assert (tmp_path / "units" / "broken" / "error.json").is_file()
    for name in ("none", "mean-diff"):
        assert 0 <= rows[name]["mc1"] <= 100 and 0 <= rows[name]["mc2"] <= 100
    # the fold protocol: the chosen setting is the best on its tuning fold, and the
    # headline is the question-weighted mean of the chosen settings' held-out scores
    tuning = rows["mean-diff"]["tuning"]
    grid = [setting_id(s) for s in METHODS["mean-diff"].grid]
    sizes = {1: len(folds[1]), 2: len(folds[2])}
    expected = 0.0
    for tune, test in ((1, 2), (2, 1)):
        scores = [
            (tuning[s][f"fold{tune}"]["mc1"] + tuning[s][f"fold{tune}"]["mc2"]) / 2 for s in grid
        ]
        chosen = grid[scores.index(max(scores))]
        assert rows["mean-diff"]["selections"][f"fold{tune}->fold{test}"] == chosen
        expected += sizes[test] * tuning[chosen][f"fold{test}"]["mc2"]
    assert rows["mean-diff"]["mc2"] == pytest.approx(expected / sum(sizes.values()))
    # overhead: timed back to back on the first held-out questions; for none it is noise
    assert rows["none"]["overhead_tokens"] == tokens_processed(tokenizer, folds[2][:10])
    assert math.isfinite(rows["none"]["overhead_percent"])
    assert (tmp_path / "units" / "none" / "default--overhead.json").is_file()
    assert set(rows["none"]["control_tasks"]) == {"arc_easy", "boolq"}  # gsm8k: not a choice task
    assert "gsm8k" in rows["dola"]["control_skipped"] and not rows["none"]["control_skipped"]
    assert report["tokens_scored"] == {f: tokens_processed(tokenizer, folds[f]) for f in (1, 2)}
    for name in ("report.json", "report.md", "truthfulness_vs_control.png"):
        assert (tmp_path / name).stat().st_size > 0
    markdown = (tmp_path / "report.md").read_text()
    assert "failed: RuntimeError: planted failure" in markdown and "| mean-diff |" in markdown
    # harm beside truthfulness: none is the reference itself (KL exactly 0, the same
    # generations); a real edit moves the distribution; DoLa has no hooks to measure
    assert rows["none"]["harm"]["kl_mean"] == 0.0 and rows["none"]["harm"]["changed"] == 0
    assert rows["mean-diff"]["harm"]["kl_mean"] > 0
    assert rows["dola"]["harm"] is None
    assert rows["mean-diff"]["samples"] and "## Generations" in markdown

    calls.clear()
    again = run_compare(
        model,
        tokenizer,
        DEMOS,
        folds,
        OPTIONS,
        tmp_path,
        data_dir=data_dir,
        model_name="tiny",
        registry=_registry(False, calls),
        echo=_quiet,
    ).to_json()
    assert calls == ["x=1"]  # only the failed method ran again
    assert "error" not in again["methods"]["broken"]
    assert not (tmp_path / "units" / "broken" / "error.json").exists()
    assert again["methods"]["mean-diff"]["mc2"] == rows["mean-diff"]["mc2"]


def test_changed_options_are_not_reused(tmp_path, data_dir):
    model, tokenizer = make_tiny_model("llama"), make_tiny_tokenizer()
    folds, calls = _folds(), []
    options = dataclasses.replace(OPTIONS, methods=("mean-diff",), control_tasks=("boolq",))
    run_compare(
        model,
        tokenizer,
        DEMOS,
        folds,
        options,
        tmp_path,
        registry=_registry(False, calls),
        data_dir=data_dir,
        echo=_quiet,
    ).to_json()
    first = len(calls)
    run_compare(
        model,
        tokenizer,
        DEMOS[:6],
        folds,
        options,
        tmp_path,
        registry=_registry(False, calls),
        data_dir=data_dir,
        echo=_quiet,
    ).to_json()
    assert len(calls) == 2 * first  # other demonstrations: everything recomputed


def test_one_direction_scores_only_the_chosen_setting_on_fold_2(tmp_path, data_dir):
    model, tokenizer = make_tiny_model("llama"), make_tiny_tokenizer()
    options = dataclasses.replace(
        OPTIONS, methods=("mean-diff",), control_tasks=("boolq",), both_directions=False
    )
    report = run_compare(
        model,
        tokenizer,
        DEMOS,
        _folds(),
        options,
        tmp_path,
        data_dir=data_dir,
        echo=_quiet,
    ).to_json()
    row = report["methods"]["mean-diff"]
    chosen = row["selections"]["fold1->fold2"]
    assert list(row["selections"]) == ["fold1->fold2"]
    assert all("fold1" in by_fold for by_fold in row["tuning"].values())
    assert [sid for sid, f in row["tuning"].items() if "fold2" in f] == [chosen]
    assert row["mc2"] == row["tuning"][chosen]["fold2"]["mc2"]
    assert "chosen on fold 1" in (tmp_path / "report.md").read_text()


def test_parse_methods_errors():
    assert parse_methods("none, sea") == ["none", "sea"]
    with pytest.raises(ValueError, match="unknown method"):
        parse_methods("none,magic")
    with pytest.raises(ValueError, match="twice"):
        parse_methods("sea,sea")


def test_same_tuning_budget_for_every_method():
    sizes = {name: len(spec.grid) for name, spec in METHODS.items() if name != "none"}
    assert len(set(sizes.values())) == 1, sizes


def test_sea_compare_cli(tiny_model_dir, tmp_path):
    demos = write_demos(tmp_path / "demos.jsonl", DEMOS)
    out = tmp_path / "cmp"
    args = [
        "compare",
        "--model",
        str(tiny_model_dir),
        "--demos",
        str(demos),
        "--methods",
        "none,sea,dola",
        "--mc-file",
        "mc_task.json",
        "--data-dir",
        str(FIXTURES),
        "--control-tasks",
        "arc_easy",
        "--control-limit",
        "2",
        "--neutral",
        "prompt",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert set(report["methods"]) == {"none", "sea", "dola"}
    assert report["methods"]["sea"]["control_tasks"]["arc_easy"] >= 0
    bad = CliRunner().invoke(app, [*args[:5], "--methods", "none,magic"])
    assert bad.exit_code == 2 and "unknown method" in bad.output


def test_a_prepared_editor_is_saved_and_not_prepared_again(tmp_path, data_dir):
    """An expensive preparation (ITI probes, LoRA training) is stored with the units: a
    resumed run loads it instead of preparing again, and scores the same."""
    from spectral_edit.editors.baselines import MeanDifferenceEditor

    model, tokenizer = make_tiny_model("llama"), make_tiny_tokenizer()
    prepared = []

    def prepare(ctx):
        prepared.append(1)
        layers, _, positive, negative = ctx.arrays("all")
        return MeanDifferenceEditor.fit(positive, negative, layers=layers, num_layers=2)

    spec = MethodSpec(
        "trained",
        "a stand-in for a trained editor",
        ({"alpha": 0.5}, {"alpha": 2.0}),
        prepare,
        lambda state, setting, ctx: Intervention(state.with_options(**setting)),
        load_state=MeanDifferenceEditor.load,
    )
    options = dataclasses.replace(OPTIONS, methods=("trained",), control_tasks=("boolq",))
    run = lambda: run_compare(  # noqa: E731
        model,
        tokenizer,
        DEMOS,
        _folds(),
        options,
        tmp_path,
        data_dir=data_dir,
        registry={"trained": spec},
        echo=_quiet,
    ).to_json()
    first = run()
    assert prepared == [1] and (tmp_path / "units" / "trained" / "prepared.safetensors").is_file()
    for unit in (tmp_path / "units" / "trained").glob("alpha=2.0--truthfulqa-*.json"):
        unit.unlink()
    again = run()
    assert prepared == [1]  # loaded, not prepared again
    scores = lambda report: {  # noqa: E731
        (sid, fold): (s["mc1"], s["mc2"], s["mc3"])
        for sid, by_fold in report["methods"]["trained"]["tuning"].items()
        for fold, s in by_fold.items()
    }
    assert scores(again) == scores(first)


def test_typed_report_and_no_plot_without_matplotlib(tmp_path, data_dir, monkeypatch):
    """The report is typed (directions, summaries); without matplotlib (the ``plots``
    extra) report.md and report.json are still written and the plot is said skipped."""
    from spectral_edit.experiments.folds import DIRECTIONS

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    model, tokenizer = make_tiny_model("llama"), make_tiny_tokenizer()
    said = []
    options = dataclasses.replace(
        OPTIONS, methods=("none", "mean-diff"), control_tasks=("boolq",), both_directions=False
    )
    report = run_compare(
        model, tokenizer, DEMOS, _folds(), options, tmp_path, data_dir=data_dir, echo=said.append
    )
    assert (tmp_path / "report.md").is_file() and (tmp_path / "report.json").is_file()
    assert not (tmp_path / "truthfulness_vs_control.png").exists()
    assert any(m.startswith("plot skipped:") and "plots" in m for m in said)
    summary = report.summaries["mean-diff"]
    chosen = summary.selections[DIRECTIONS[0]]
    assert (
        list(summary.selections) == [DIRECTIONS[0]]
        and summary.mc2 == summary.tuning[chosen][2]["mc2"]
    )
    assert report.failed == [] and report.table().rows[0][0] == "none"
    assert json.loads((tmp_path / "report.json").read_text()) == json.loads(
        json.dumps(report.to_json())
    )
