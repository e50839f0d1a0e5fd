"""The ``sea`` command line on a tiny model saved to a folder."""

import json

import pytest
from typer.testing import CliRunner

from spectral_edit import SpectralEditor
from spectral_edit.cli.app import app
from spectral_edit.demos.format import Demonstration, write_demos
from tests.cli_runs import eval_bbq_fixture, eval_crows_fixture

runner = CliRunner()
FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures" / "data"


@pytest.fixture()
def demos_file(tmp_path):
    demos = [
        Demonstration(f"q: thing {i}\na:", f"yes it is {i}", f"no never {i}") for i in range(12)
    ]
    return write_demos(tmp_path / "demos.jsonl", demos)


def test_fit_info_generate(tiny_model_dir, demos_file, tmp_path):
    out = tmp_path / "e.safetensors"
    result = runner.invoke(
        app,
        [
            "fit",
            "--model",
            str(tiny_model_dir),
            "--demos",
            str(demos_file),
            "--out",
            str(out),
            "--layers",
            "all",
            "--neutral",
            "prompt",
            "--centered",
            "--pos-ratio",
            "0.9",
            "--neg-ratio",
            "0.95",
        ],
    )
    assert result.exit_code == 0, result.output
    editor = SpectralEditor.load(out)
    assert editor.layers == (0, 1, 2)
    assert editor.metadata["n_demonstrations"] == 12 and editor.metadata["centered"]
    info = runner.invoke(app, ["info", str(out)])
    assert info.exit_code == 0 and "signature" in info.output and "12" in info.output
    gen = runner.invoke(
        app,
        [
            "generate",
            "--model",
            str(tiny_model_dir),
            "--editor",
            str(out),
            "--max-new-tokens",
            "4",
            "the cat",
        ],
    )
    assert gen.exit_code == 0, gen.output
    assert "edited" in gen.output and "unedited" in gen.output


def test_fit_feature_map_selectable(tiny_model_dir, demos_file, tmp_path):
    out = tmp_path / "phi.safetensors"
    result = runner.invoke(
        app,
        [
            "fit",
            "--model",
            str(tiny_model_dir),
            "--demos",
            str(demos_file),
            "--out",
            str(out),
            "--layers",
            "last-1",
            "--neutral",
            "prompt",
            "--feature",
            "squared-exponential",
            "--pos-rank",
            "3",
            "--neg-rank",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    editor = SpectralEditor.load(out)
    assert editor.feature == "squared-exponential" and editor.ranks == {2: (3, 2)}
    assert editor.feature_scales is not None and editor.feature_scales[0] > 0


def test_clear_errors(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "positive": "x"}\n')
    result = runner.invoke(
        app,
        [
            "fit",
            "--model",
            str(tiny_model_dir),
            "--demos",
            str(bad),
            "--out",
            str(tmp_path / "e.safetensors"),
        ],
    )
    assert result.exit_code == 2 and "bad.jsonl:1" in result.output
    assert not (tmp_path / "e.safetensors").exists()
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    result = runner.invoke(app, ["info", str(tmp_path / "junk.safetensors")])
    assert result.exit_code == 2 and "junk.safetensors" in result.output
    result = runner.invoke(app, ["generate", "--model", str(tmp_path / "no-model"), "hi"])
    assert result.exit_code == 2 and "no-model" in result.output


def test_demos_and_eval_truthfulqa(tiny_model_dir, tmp_path):
    out = tmp_path / "tqa_demos.jsonl"
    result = runner.invoke(
        app, ["demos", "truthfulqa", "--fold", "1", "--out", str(out), "--data-dir", str(FIXTURES)]
    )
    assert result.exit_code == 0, result.output
    assert out.read_text().count("\n") >= 1
    report = tmp_path / "report"
    result = runner.invoke(
        app,
        [
            "eval",
            "truthfulqa",
            "--model",
            str(tiny_model_dir),
            "--mc-file",
            "mc_task.json",
            "--data-dir",
            str(FIXTURES),
            "--out",
            str(report),
            "--limit",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((report / "summary.json").read_text())
    assert summary["n"] == 2 and 0 <= summary["mc2"] <= 100
    assert len((report / "per_question.jsonl").read_text().splitlines()) == 2
    missing = runner.invoke(
        app, ["demos", "halueval", "--out", str(tmp_path / "h.jsonl"), "--data-dir", str(tmp_path)]
    )
    assert missing.exit_code == 2 and "qa_one-turn_data.json" in missing.output


def test_bias_and_control_commands(tiny_model_dir, tmp_path):
    demos = tmp_path / "bbq.jsonl"
    result = runner.invoke(
        app, ["demos", "bbq", "--out", str(demos), "--n", "2", "--data-dir", str(FIXTURES)]
    )
    assert result.exit_code == 0, result.output
    assert len(demos.read_text().splitlines()) == 2
    eval_bbq_fixture(tmp_path / "bbq", ["--model", str(tiny_model_dir)])
    eval_crows_fixture(tmp_path / "crows", ["--model", str(tiny_model_dir)])
    result = runner.invoke(
        app,
        [
            "eval",
            "control",
            "--model",
            str(tiny_model_dir),
            "--tasks",
            "arc_easy,winogrande",
            "--data-dir",
            str(FIXTURES),
            "--out",
            str(tmp_path / "control"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "arc_easy" in json.loads((tmp_path / "control" / "summary.json").read_text())["tasks"]


def test_fit_feature_scales_given_or_refused(tiny_model_dir, demos_file, tmp_path):
    args = ["fit", "--model", str(tiny_model_dir), "--demos", str(demos_file)]
    args += ["--layers", "last-2", "--neutral", "prompt", "--feature", "tanh"]
    out = tmp_path / "tanh.safetensors"
    result = runner.invoke(app, [*args, "--out", str(out), "--feature-scales", "2.5,4"])
    assert result.exit_code == 0, result.output
    assert SpectralEditor.load(out).feature_scales == (2.5, 4.0)
    for bad, message in (("2.5,x", "not a list of numbers"), ("2.5,-1", "must be > 0")):
        bad_out = tmp_path / "bad.safetensors"
        result = runner.invoke(app, [*args, "--out", str(bad_out), "--feature-scales", bad])
        assert result.exit_code == 2 and message in result.output, result.output
        assert not bad_out.exists()
    result = runner.invoke(
        app, [*args, "--out", str(tmp_path / "b.safetensors"), "--feature-scales", "1"]
    )
    assert result.exit_code == 2 and "one scale per layer" in result.output, result.output
