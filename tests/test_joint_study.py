"""The joint-vs-specialised study end to end on a tiny model and the hand-written fixtures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from spectral_edit.core.options import SeaOptions
from spectral_edit.data.splits import bbq_group_key, bbq_split, truthfulqa_questions
from spectral_edit.editors.composition import ComposedEditor
from spectral_edit.editors.registry import load_editor
from spectral_edit.evaluate.bbq import evaluate_bbq
from spectral_edit.evaluate.truthfulqa import evaluate_truthfulqa
from spectral_edit.experiments.joint_study import (
    SETTINGS,
    JointStudyOptions,
    joint_vs_specialised,
)
from spectral_edit.hf.models import load_model

FIXTURES = Path(__file__).parent / "fixtures" / "data"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The hand-written fixtures laid out as the study reads them (never downloaded)."""
    monkeypatch.setenv("SEA_OFFLINE", "1")
    data = tmp_path / "data"
    (data / "halueval").mkdir(parents=True)
    shutil.copy(FIXTURES / "halueval" / "qa_data.json", data / "halueval" / "qa_one-turn_data.json")
    shutil.copytree(FIXTURES / "truthfulqa", data / "truthfulqa")
    shutil.copytree(FIXTURES / "bbq", data / "bbq")
    return data


def _options(**changes) -> JointStudyOptions:
    truth = SeaOptions(layers="last-2", neutral="prompt", centered=True, pos_rank=1, neg_rank=2)
    bias = truth.replace(layers="last-1", feature="squared-exponential")
    base = dict(
        n_truth=3, n_bias=2, tqa_limit=None, bbq_limit=None, mc_file="mc_task.json",
        truth=truth, bias=bias, batch_size=4,
    )  # fmt: skip
    return JointStudyOptions(**{**base, **changes})


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_study_scores_every_setting_and_resumes(tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "study"
    options = _options()
    report = joint_vs_specialised(str(tiny_model_dir), options, out_dir=out, data_dir=data_dir)
    assert [row[0] for row in report["rows"]] == list(SETTINGS)
    assert (out / "report.md").read_text().count("\n| ") == len(SETTINGS) + 1
    assert json.loads((out / "report.json").read_text())["rows"] == report["rows"]

    model, tokenizer = load_model(str(tiny_model_dir))
    truth = load_editor(out / "truthfulness.safetensors", model)
    bias = load_editor(out / "bias.safetensors", model)
    joint = load_editor(out / "joint.safetensors", model)
    composed = load_editor(out / "composed.safetensors", model)
    # the fits: the specialised editors on their own sets, the joint one on both pooled
    assert truth.layers == (1, 2) and bias.layers == (2,) and joint.layers == (1, 2)
    assert str(bias.feature) == "squared-exponential" and str(truth.feature) == "linear"
    assert isinstance(composed, ComposedEditor)
    assert [type(m) for m in composed.editors] == [type(truth), type(bias)]
    assert int(joint.metadata["n_demonstrations"]) == 3 + 2
    assert not torch.equal(joint.pos_factors[0], truth.pos_factors[0])

    # held out: no scored BBQ item shares a template with a bias demonstration
    demo_items, held_out = bbq_split(2, 0, data_dir)
    assert report["n_bbq_items"] == len(held_out) > 0
    assert not {bbq_group_key(i) for i in demo_items} & {bbq_group_key(i) for i in held_out}

    # every row is what scoring the model under that editor gives, done here by hand
    questions = truthfulqa_questions("mc_task.json", data_dir)
    by_setting = {"none": None, "truthfulness": truth, "bias": bias}
    by_setting |= {"composed": ComposedEditor((truth, bias)), "joint": joint}
    for setting, editor in by_setting.items():
        with editor.apply(model) if editor is not None else torch.no_grad():
            tqa = evaluate_truthfulqa(model, tokenizer, questions, batch_size=4)
        result = report["results"][setting]
        assert result["truthfulqa"]["mc2"] == pytest.approx(tqa.summary["mc2"], abs=1e-9)
        assert result["truthfulqa"]["mc1"] == tqa.summary["mc1"]
    items = sorted(held_out, key=lambda i: (i.category, i.example_id))
    with composed.apply(model):
        bbq = evaluate_bbq(model, tokenizer, items, batch_size=4)
    scored = report["results"]["composed"]["bbq"]
    assert scored["n"] == len(items)
    assert scored["accuracy"] == pytest.approx(
        100 * sum(bool(r["correct"]) for r in bbq.per_item) / len(items)
    )
    assert report["results"]["composed"] != report["results"]["truthfulness"]

    # a rerun reuses every stage; a changed fit refits and re-scores only what it changes
    messages: list[str] = []
    again = joint_vs_specialised(
        str(tiny_model_dir), options, out_dir=out, data_dir=data_dir, echo=messages.append
    )
    assert again["rows"] == report["rows"]
    assert not any(m.startswith("scoring") for m in messages)
    messages.clear()
    changed = _options(bias=options.bias.replace(alpha=0.5))
    joint_vs_specialised(
        str(tiny_model_dir), changed, out_dir=out, data_dir=data_dir, echo=messages.append
    )
    rescored = sorted(m for m in messages if m.startswith("scoring"))
    assert rescored == ["scoring bias …", "scoring composed …"]


def test_the_options_are_checked_before_anything_runs():
    with pytest.raises(ValueError, match="n_bias"):
        _options(n_bias=0)
    with pytest.raises(ValueError, match="share neutral"):
        _options(bias=SeaOptions(layers="last-1", neutral="generate"))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_command_runs_the_study_and_resumes(tiny_model_dir, data_dir, tmp_path):
    from typer.testing import CliRunner

    from spectral_edit.cli.app import app

    out = tmp_path / "command"
    args = [
        "joint-study", "--model", str(tiny_model_dir), "--out", str(out), "--data-dir",
        str(data_dir), "--n-truth", "3", "--n-bias", "2", "--tqa-limit", "2", "--bbq-limit",
        "3", "--mc-file", "mc_task.json", "--truth-layers", "last-2", "--bias-layers",
        "last-1", "--neutral", "prompt", "--pos-rank", "1", "--neg-rank", "2",
        "--joint-like", "bias", "--batch-size", "4",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "composed" in result.output and "joint" in result.output
    report = json.loads((out / "report.json").read_text())
    assert [row[0] for row in report["rows"]] == list(SETTINGS)
    assert report["n_questions"] == 2 and report["n_bbq_items"] == 3
    assert report["options"]["joint_options"]["layers"] == "last-1"
    assert report["options"]["bias_options"]["feature"] == "squared-exponential"
    again = CliRunner().invoke(app, args)  # a rerun reuses every stage
    assert again.exit_code == 0, again.output
    assert "scoring" not in again.output
    assert json.loads((out / "report.json").read_text())["rows"] == report["rows"]
    bad = CliRunner().invoke(app, [*args[:-2], "--joint-like", "both"])
    assert bad.exit_code == 2 and "--joint-like" in bad.output
