"""Output safety under signals (catalogue item 4): SIGKILL and SIGINT mid-save, each
signal during `sea fit`, `sea eval truthfulqa`, `sea demo` and `sea compare`.

Each case runs ``sea`` as a real process on a tiny model folder, holds it just before a
chosen file is committed (:data:`~spectral_edit.util.atomic.TEST_HOLD_ENV`), signals it,
then checks: no partial output (the target absent, or the earlier file unchanged); after
SIGINT exit 130 and no temporary; after SIGKILL the dead writer's temporary is swept by
the rerun. The rerun (in-process, to keep the tests short) resumes where that is promised
(the stores of ``sea demo`` and ``sea compare``: finished stages are not recomputed) and
gives the same results as an uninterrupted run, compared file by file with the timing
fields (:data:`TIMING`) left out. Each case costs one ``sea`` process start (seconds).
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
from safetensors import safe_open
from safetensors.torch import load_file

from spectral_edit.demos.format import Demonstration, write_demos
from tests.cli_runs import compare_args
from tests.failures import sea_process
from tests.failures.refusals import assert_ok, run_cli, temporaries

FIXTURES = Path(__file__).parents[1] / "fixtures" / "data"
DEMOS = [Demonstration(f"Q: item {i}?\nA:", f" yes {i}", f" no {i}") for i in range(8)]

TIMING = {"seconds", "ms", "percent", "timing", "timings"}
"""Words of the keys whose values are wall-clock measurements or derived from them
(``fit_seconds``, ``seconds_method``, ``overhead_ms_per_token``, ``overhead_percent``);
an editor header's ``content_sha256`` is left out too (it hashes its timing fields).
Everything else must be identical."""


def _timed(key: str) -> bool:
    return key == "content_sha256" or bool(TIMING & set(key.split("_")))


def _untimed(value: Any) -> Any:
    """``value`` without the timing fields, recursively."""
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if not _timed(k)}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def _json_files(folder: Path) -> dict[str, Any]:
    """Every JSON / JSON Lines file under ``folder`` (relative name → content, untimed)."""
    files: dict[str, Any] = {}
    for path in sorted(folder.rglob("*.json*")):
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            content: Any = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            content = json.loads(text)
        files[path.relative_to(folder).as_posix()] = _untimed(content)
    return files


def _editor(path: Path) -> tuple[dict[str, list[float]], Any]:
    """An editor file's tensors and its header (untimed)."""
    with safe_open(str(path), framework="pt") as handle:
        header = {k: json.loads(v) for k, v in (handle.metadata() or {}).items()}
    return {k: v.flatten().tolist() for k, v in load_file(path).items()}, _untimed(header)


def _no_temporaries(folder: Path) -> None:
    left = [p for d in (folder, *folder.rglob("*")) if d.is_dir() for p in temporaries(d)]
    assert left == [], left


SIGNALS = pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
"""Every case under both signals: a kill the process cannot see, and Ctrl-C."""


def _stop(process: Any, sig: signal.Signals, folder: Path) -> None:
    """Send ``sig`` to the held ``process`` and check what that signal promises: after
    SIGINT exit 130, the message, no traceback and no temporary left in ``folder``; after
    SIGKILL the process died of it (its temporaries are the rerun's to sweep)."""
    stopped = sea_process.stop(process, sig)
    if sig == signal.SIGINT:
        assert stopped.returncode == 130, stopped.output
        assert "interrupted" in stopped.output and "Traceback" not in stopped.output
        _no_temporaries(folder)
    else:
        assert stopped.returncode == -signal.SIGKILL, stopped.output


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Hand-written fixtures laid out as ``sea demo`` / ``sea compare`` expect."""
    folder = tmp_path_factory.mktemp("signal-data")
    shutil.copytree(FIXTURES, folder, dirs_exist_ok=True)
    mc = folder / "truthfulqa"
    shutil.copy(mc / "mc_task.json", mc / "mc_task_v0.json")
    shutil.copy(folder / "halueval" / "qa_data.json", folder / "halueval" / "qa_one-turn_data.json")
    return folder


@pytest.fixture(scope="module")
def demos_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demos(tmp_path_factory.mktemp("signal-demos") / "demos.jsonl", DEMOS)


@SIGNALS
def test_signal_during_sea_fit_save(
    sig: signal.Signals, tiny_model_dir: Path, demos_file: Path, tmp_path: Path
):
    out = tmp_path / "editor.safetensors"
    args = ["fit", "--model", tiny_model_dir, "--demos", demos_file, "--out", out]
    args += ["--layers", "last-2", "--neutral", "prompt"]
    process = sea_process.start(args, hold="editor.safetensors")
    sea_process.wait_for(process)
    _stop(process, sig, tmp_path)
    assert not out.exists()  # no partial editor
    if sig == signal.SIGKILL:
        assert len(temporaries(tmp_path)) == 1  # the complete temporary the kill left
    assert_ok(run_cli(args))  # the rerun
    _no_temporaries(tmp_path)  # the dead writer's temporary is gone
    reference = tmp_path / "uninterrupted" / "editor.safetensors"
    assert_ok(run_cli([*args[:-5], reference, *args[-4:]]))
    rerun, expected = load_file(out), load_file(reference)
    assert rerun.keys() == expected.keys()
    assert all((rerun[k] == expected[k]).all() for k in rerun)


@SIGNALS
def test_signal_during_sea_eval_keeps_the_earlier_result(
    sig: signal.Signals, tiny_model_dir: Path, tmp_path: Path
):
    out = tmp_path / "tqa"
    args = ["eval", "truthfulqa", "--model", tiny_model_dir, "--mc-file", "mc_task.json"]
    args += ["--data-dir", FIXTURES, "--out", out]
    assert_ok(run_cli([*args, "--limit", "1"]))  # an earlier result, 1 question
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    process = sea_process.start([*args, "--limit", "3"], hold="*.jsonl")
    sea_process.wait_for(process)
    _stop(process, sig, out)
    kept = {p.name: p.read_bytes() for p in out.iterdir() if p not in temporaries(out)}
    assert kept == before  # both files as they were
    assert_ok(run_cli([*args, "--limit", "3"]))
    _no_temporaries(out)  # a killed writer's temporaries are swept by the rerun
    reference = tmp_path / "uninterrupted"
    assert_ok(run_cli([*args[:-1], reference, "--limit", "3"]))
    assert _json_files(out) == _json_files(reference)
    assert json.loads((out / "summary.json").read_text())["n"] == 3


def _demo_args(model_dir: Path, data_dir: Path, out: Path) -> list[Any]:
    return [
        "demo",
        "--model",
        model_dir,
        "--n-demos",
        "3",
        "--limit",
        "2",
        "--layers",
        "last-2",
        "--pos-ratio",
        "0.9",
        "--neg-ratio",
        "0.9",
        "--batch-size",
        "4",
        "--data-dir",
        data_dir,
        "--out",
        out,
    ]


@SIGNALS
def test_signal_during_sea_demo_then_resume(
    sig: signal.Signals, tiny_model_dir: Path, data_dir: Path, tmp_path: Path
):
    out = tmp_path / "demo"
    args = _demo_args(tiny_model_dir, data_dir, out)
    process = sea_process.start(args, hold="truthfulqa_edited.jsonl")
    sea_process.wait_for(process)
    _stop(process, sig, out)
    assert not (out / "truthfulqa_edited.jsonl").exists()
    assert not (out / "report.json").exists()
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    assert set(finished) == {"fit.json", "eval_unedited.json"}  # the stages done before
    output = assert_ok(run_cli(args))  # the rerun resumes
    assert "fit: done earlier" in output and "eval_unedited: done earlier" in output
    assert {n: (out / n).stat().st_mtime_ns for n in finished} == finished
    _no_temporaries(out)
    reference = tmp_path / "uninterrupted"
    assert_ok(run_cli(_demo_args(tiny_model_dir, data_dir, reference)))
    assert _json_files(out) == _json_files(reference)
    assert _editor(out / "editor.safetensors") == _editor(reference / "editor.safetensors")


@SIGNALS
def test_signal_during_sea_compare_then_resume(
    sig: signal.Signals, tiny_model_dir: Path, demos_file: Path, data_dir: Path, tmp_path: Path
):
    out = tmp_path / "cmp"
    args = compare_args(tiny_model_dir, demos_file, data_dir, out)
    process = sea_process.start(args, hold="*--control.json")  # the first method's control
    sea_process.wait_for(process)
    _stop(process, sig, out)
    assert not (out / "report.json").exists()
    done = {p.relative_to(out): p.stat().st_mtime_ns for p in out.rglob("*fold*.json")}
    assert done  # the tuning units finished before the interrupt
    output = assert_ok(run_cli(args))
    assert "done earlier" in output
    assert {p: (out / p).stat().st_mtime_ns for p in done} == done  # reused, not redone
    _no_temporaries(out)  # a killed writer's temporary is swept by the rerun
    reference = tmp_path / "uninterrupted"
    assert_ok(run_cli(compare_args(tiny_model_dir, demos_file, data_dir, reference)))
    assert _json_files(out) == _json_files(reference)
