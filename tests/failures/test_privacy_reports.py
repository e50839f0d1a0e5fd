"""Privacy of reports (catalogue item 7): what ``sea demo`` and ``sea eval`` write (reports,
summaries, store records, per-question files, the lock file) records no local path: the
model folder appears by its name, the editor file by its name, stages by content keys.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from spectral_edit.demos.format import Demonstration, write_demos
from spectral_edit.evaluate.results import shareable
from tests.failures.refusals import assert_ok, run_cli

FIXTURES = Path(__file__).parents[1] / "fixtures" / "data"
DEMOS = [Demonstration(f"Q: item {i}?\nA:", f" yes {i}", f" no {i}") for i in range(8)]


def _leaks(folder: Path, *paths: Path) -> list[str]:
    """``file: path`` for every file under ``folder`` whose bytes contain one of ``paths``."""
    found = []
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = file.read_bytes()
        found += [f"{file.name}: {p}" for p in paths if str(p).encode() in data]
    return found


@pytest.fixture
def model_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """The tiny model, under this test's own folder."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "models" / "tiny"))


def test_sea_demo_writes_no_local_path(model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(FIXTURES / "truthfulqa", data / "truthfulqa")
    shutil.copy(data / "truthfulqa" / "mc_task.json", data / "truthfulqa" / "mc_task_v0.json")
    (data / "halueval").mkdir()
    shutil.copy(FIXTURES / "halueval" / "qa_data.json", data / "halueval" / "qa_one-turn_data.json")
    out = tmp_path / "run"
    args = ["demo", "--model", model_dir, "--n-demos", "3", "--limit", "2", "--layers", "last-2"]
    args += ["--pos-ratio", "0.9", "--neg-ratio", "0.9", "--data-dir", data, "--out", out]
    assert_ok(run_cli(args, SEA_OFFLINE="1"))
    assert (out / "report.json").is_file()
    assert _leaks(out, tmp_path, Path.home()) == []


def test_sea_eval_writes_no_local_path(model_dir: Path, tmp_path: Path) -> None:
    demos = write_demos(tmp_path / "inputs" / "demos.jsonl", DEMOS)
    editor = tmp_path / "inputs" / "editor.safetensors"
    fit = ["fit", "--model", model_dir, "--demos", demos, "--out", editor]
    assert_ok(run_cli([*fit, "--layers", "last-1", "--neutral", "prompt"]))
    out = tmp_path / "tqa"
    args = ["eval", "truthfulqa", "--model", model_dir, "--editor", editor, "--limit", "2"]
    args += ["--mc-file", "mc_task.json", "--data-dir", FIXTURES, "--out", out]
    assert_ok(run_cli(args))
    assert _leaks(out, tmp_path, Path.home()) == []
    summary = (out / "summary.json").read_text()
    assert '"model": "tiny"' in summary and '"editor": "editor.safetensors"' in summary


def test_shareable_keeps_names_and_strips_paths() -> None:
    value = {"model": "/home/u/m/tiny", "hub": "google/gemma-3-270m", "n": 3, "l": ["~/x.json"]}
    assert shareable(value) == {
        "model": "tiny",
        "hub": "google/gemma-3-270m",
        "n": 3,
        "l": ["x.json"],
    }
