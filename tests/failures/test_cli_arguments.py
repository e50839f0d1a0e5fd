"""Catalogue item 5, CLI arguments: unknown options, bad ``--alpha``, a ``--data-dir`` that
is not a folder, missing benchmark files, unknown methods and unknown control tasks.

Each is refused with exit code 2 and a message naming the option (or the file and the
folder searched) and what is valid, before any model is loaded (``--model`` names no
model, so a run that got that far would fail differently) and without writing ``--out``.
The Python API refuses the same values with its own exception types.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from spectral_edit.cli.common import parse_alpha
from spectral_edit.data.control import CONTROL_TASKS
from spectral_edit.data.errors import DataFileMissing
from spectral_edit.data.locate import resolve
from spectral_edit.data.splits import truthfulqa_questions
from spectral_edit.evaluate.control import evaluate_control
from spectral_edit.experiments.methods import METHODS, parse_methods
from tests.failures.refusals import assert_nothing_written, assert_refused, run_cli

FIXTURES = Path(__file__).parent.parent / "fixtures" / "data"
NO_MODEL = ["--model", "/nonexistent/model-folder"]
"""A model that cannot load: an argument refused first never gets to it."""

SUBCOMMANDS = [
    ["fit"],
    ["info", "editor.safetensors"],
    ["generate", "hello"],
    ["eval", "truthfulqa"],
    ["eval", "bbq"],
    ["eval", "crows-pairs"],
    ["eval", "control"],
    ["eval", "harm"],
    ["eval", "truthfulqa-gen"],
    ["demos", "halueval", "--out", "d.jsonl"],
    ["demo"],
    ["compare"],
    ["tune"],
]

ALPHA_COMMANDS = [
    ["generate", "hello"],
    ["eval", "truthfulqa"],
    ["eval", "bbq"],
    ["eval", "crows-pairs", "--file", "pairs.csv"],
    ["eval", "control"],
    ["eval", "harm"],
    ["eval", "truthfulqa-gen"],
]
"""Every command with an ``--alpha`` that overrides an editor's strength (``sea fit
--alpha`` goes through ``SeaOptions``: part B's catalogue)."""


@pytest.mark.parametrize("command", SUBCOMMANDS, ids=lambda c: " ".join(c[:2]))
def test_unknown_option_on_every_command_is_a_usage_error(command):
    output = assert_refused(run_cli([*command, "--no-such-option"]), "--no-such-option")
    assert "No such option" in output


@pytest.mark.parametrize("value", ["x", "nan", "inf", "-inf", "1e308"])
@pytest.mark.parametrize("command", ALPHA_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_bad_alpha_is_refused_at_parse_time(command, value, tmp_path):
    out = tmp_path / "out"
    outs = [] if command[0] == "generate" else ["--out", out]  # sea generate only prints
    result = run_cli([*command, *NO_MODEL, "--alpha", value, *outs])
    output = assert_refused(result, "--alpha", value)
    assert "No such option" not in output
    assert not out.exists()


@pytest.mark.parametrize("value", ["x", "nan", "inf", "1e308"])
def test_alpha_parser_refuses_what_editors_refuse(value):
    import typer

    with pytest.raises(typer.BadParameter, match="alpha"):
        parse_alpha(value)


@pytest.mark.parametrize("value", ["0", "-1.5", "2", " 0.25 "])
def test_alpha_parser_keeps_finite_strengths(value):
    assert parse_alpha(value) == float(value)


# --------------------------------------------------------------------------- --data-dir


@pytest.mark.parametrize("kind", ["missing", "a file"])
def test_data_dir_that_is_not_a_folder_is_refused(kind, tmp_path):
    folder = tmp_path / "no-such-data"
    if kind == "a file":
        folder.write_text("not a folder")
    out = tmp_path / "out"
    result = run_cli(["eval", "truthfulqa", *NO_MODEL, "--data-dir", folder, "--out", out])
    assert_refused(result, "--data-dir", folder.name)
    assert not out.exists()


@pytest.mark.parametrize("kind", ["missing", "a file"])
def test_api_refuses_a_chosen_data_dir_that_is_not_a_folder(kind, tmp_path, monkeypatch):
    folder = tmp_path / "no-such-data"
    if kind == "a file":
        folder.write_text("not a folder")
    for data_dir, env in ((folder, None), (None, str(folder))):
        if env is not None:
            monkeypatch.setenv("SEA_DATA_DIR", env)
        with pytest.raises(DataFileMissing) as info:
            resolve("truthfulqa/mc_task_v0.json", data_dir)
        message = str(info.value)
        assert str(folder) in message and "mkdir" in message and "SEA_DATA_DIR" in message
        assert not folder.is_dir()  # never created (no download into a typo)


def test_missing_benchmark_file_names_file_folder_and_remedy(tmp_path):
    empty = tmp_path / "data"
    empty.mkdir()
    out = tmp_path / "out"
    result = run_cli(
        ["eval", "truthfulqa", *NO_MODEL, "--data-dir", empty, "--out", out], SEA_OFFLINE="1"
    )
    assert_refused(result, "truthfulqa/mc_task_v0.json", str(empty), "--data-dir")
    assert not out.exists()
    assert list(empty.iterdir()) == []


def test_api_missing_benchmark_file_names_file_folder_and_remedy(tmp_path, monkeypatch):
    monkeypatch.setenv("SEA_OFFLINE", "1")
    with pytest.raises(DataFileMissing) as info:
        truthfulqa_questions("mc_task_v0.json", tmp_path)
    message = str(info.value)
    assert "truthfulqa/mc_task_v0.json" in message and str(tmp_path) in message
    assert "--data-dir" in message and "SEA_DATA_DIR" in message


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("command", [["compare"], ["tune"]])
def test_unknown_method_lists_the_known_ones(command, tmp_path):
    out = tmp_path / "out"
    args = [*command, *NO_MODEL, "--methods", "sea,bogus", "--data-dir", FIXTURES, "--out", out]
    result = run_cli(args, SEA_OFFLINE="1")
    assert_refused(result, "bogus", "known", "mean-diff", "pca-vector")
    assert not out.exists()


def test_api_unknown_method_lists_the_known_ones():
    with pytest.raises(ValueError, match="bogus") as info:
        parse_methods("sea,bogus")
    assert all(name in str(info.value) for name in METHODS)


@pytest.mark.parametrize(
    ("command", "option"),
    [
        (["eval", "control"], "--tasks"),
        (["compare"], "--control-tasks"),
        (["tune"], "--control-tasks"),
    ],
)
def test_unknown_control_task_lists_the_known_ones(command, option, tmp_path):
    out = tmp_path / "out"
    result = run_cli([*command, *NO_MODEL, option, "piqa,bogus", "--out", out])
    assert_refused(result, option, "bogus", "known", *sorted(CONTROL_TASKS))
    assert not out.exists()


def test_empty_control_task_list_is_refused(tmp_path):
    result = run_cli(["eval", "control", *NO_MODEL, "--tasks", " , ", "--out", tmp_path / "o"])
    assert_refused(result, "--tasks", "no task given", "known")


def test_api_unknown_control_task_lists_the_known_ones(tiny_model_dir, tmp_path):
    from spectral_edit.hf.models import load_model

    model, tokenizer = load_model(str(tiny_model_dir))
    with pytest.raises(KeyError, match="bogus") as info:
        evaluate_control(model, tokenizer, ["piqa", "bogus"], data_dir=FIXTURES)
    assert all(name in str(info.value) for name in CONTROL_TASKS)


def test_refused_runs_leave_an_earlier_output_alone(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    earlier = out / "summary.json"
    earlier.write_text('{"n": 3}')
    result = run_cli(["eval", "truthfulqa", *NO_MODEL, "--alpha", "nan", "--out", out])
    assert_refused(result, "--alpha")
    assert_nothing_written(earlier, before=b'{"n": 3}')
