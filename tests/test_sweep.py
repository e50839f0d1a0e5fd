"""``sea sweep`` end to end on a tiny model: the fold protocol at every N, prefixes of one
capture per draw, the curves' statistics, the JSON and the plot, and resuming a run that
was killed part-way (the resumed run ends where an uninterrupted one does)."""

import dataclasses
import json
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spectral_edit.cli.app import app
from spectral_edit.data import load_fold, load_mc_task
from spectral_edit.data.truthfulqa import split_mc_by_fold
from spectral_edit.demos.format import Demonstration, write_demos
from spectral_edit.evaluate.metrics.multiple_choice import tuning_criterion
from spectral_edit.evaluate.truthfulqa import evaluate_truthfulqa
from spectral_edit.experiments import methods as methods_module
from spectral_edit.experiments.methods import METHODS, FitContext
from spectral_edit.experiments.settings import setting_id
from spectral_edit.experiments.sweep import (
    SweepOptions,
    draw_indices,
    parse_sizes,
    run_sweep,
)

from .tiny_models import make_tiny_model, make_tiny_tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "data"
POOL = [
    Demonstration(
        f"q: thing {i} of {i * 7 % 5}\na:", f"yes it is {i} and {i % 3}", f"no never {i * 3}"
    )
    for i in range(14)
]
OPTIONS = SweepOptions(
    sizes=(1, 4, 8, 50), draws=3, methods=("sea", "mean-diff"), neutral="prompt", batch_size=4
)


def _quiet(message: str) -> None:
    """No progress messages."""


def _folds():
    questions = load_mc_task(FIXTURES / "truthfulqa" / "mc_task.json")
    return {f: split_mc_by_fold(questions, load_fold(f, FIXTURES)) for f in (1, 2)}


class _Killed(KeyboardInterrupt):
    """What the planted kill raises (a KeyboardInterrupt: nothing catches it)."""


def _counting_registry(calls: list[str], kill_at: int | None = None):
    """METHODS with SEA's configure counted (and raising :class:`_Killed` at call
    ``kill_at``, as a run killed part-way)."""

    def configure(state, setting, ctx):
        calls.append(setting_id(setting))
        if kill_at is not None and len(calls) == kill_at:
            raise _Killed()
        return METHODS["sea"].configure(state, setting, ctx)

    return {**METHODS, "sea": dataclasses.replace(METHODS["sea"], configure=configure)}


def _without_timings(report: dict) -> dict:
    return {**report, "draws": [{**d, "capture_seconds": None} for d in report["draws"]]}


@pytest.fixture()
def captures(monkeypatch):
    """How many captures the sweeps run (one per draw, never one per N)."""
    count: list[int] = []
    real = methods_module.capture_demos

    def counted(*args, **kwargs):
        count.append(len(args[2]))
        return real(*args, **kwargs)

    monkeypatch.setattr(methods_module, "capture_demos", counted)
    return count


def test_sweep_end_to_end_with_a_killed_run_resumed(tmp_path, captures):
    model, tokenizer = make_tiny_model("llama"), make_tiny_tokenizer()
    folds = _folds()
    sea_grid = len(METHODS["sea"].grid)

    def sweep(out, registry):
        return run_sweep(
            model, tokenizer, POOL, folds, OPTIONS, out, model_name="tiny", registry=registry,
            echo=_quiet,
        )  # fmt: skip

    # killed during the fit check of draw 0's second size: the unedited units, draw 0's
    # capture and its N = 1 point are stored, nothing after them
    calls: list[str] = []
    with pytest.raises(_Killed):
        sweep(tmp_path / "a", _counting_registry(calls, kill_at=sea_grid + 2))
    assert captures == [8] and not (tmp_path / "a" / "sweep.json").exists()
    assert (tmp_path / "a" / "draws" / "draw-0" / "activations.safetensors").is_file()

    calls.clear()
    report = sweep(tmp_path / "a", _counting_registry(calls))
    # one capture per draw, of the largest size the pool allows; N = 1 of draw 0 reused
    assert captures == [8, 8, 8]
    assert len(calls) == sea_grid * (3 * 3 - 1)
    fresh = sweep(tmp_path / "b", METHODS)
    assert _without_timings(report) == _without_timings(fresh)
    calls.clear()
    again = sweep(tmp_path / "a", _counting_registry(calls))
    assert calls == [] and len(captures) == 6  # a finished run recomputes nothing
    assert _without_timings(again) == _without_timings(report)

    on_disk = json.loads((tmp_path / "a" / "sweep.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert (tmp_path / "a" / "sweep.png").stat().st_size > 1000
    assert report["sizes"] == [1, 4, 8] and report["sizes_dropped"] == [50]
    assert report["pool"] == len(POOL) and report["directions"] == ["fold1->fold2"]
    # independent seeded draws of the pool, each its own shuffle
    indices = [d["indices"] for d in report["draws"]]
    assert indices == [draw_indices(len(POOL), 8, OPTIONS.seed, k) for k in range(3)]
    assert all(len(set(ix)) == 8 and max(ix) < len(POOL) for ix in indices)
    assert len({tuple(ix) for ix in indices}) == 3

    for name in ("sea", "mean-diff"):
        method = report["methods"][name]
        assert [row["n"] for row in method["curve"]] == [1, 4, 8]
        for point in method["points"]:
            if "held_out" not in point:
                continue
            # the fold protocol: the best fitted setting on fold 1 (first of equals),
            # reported by its fold-2 score
            fitted = [s for s in point["tuning"]]
            scores = [tuning_criterion(point["tuning"][s]["fold1"]) for s in fitted]
            chosen = point["selections"]["fold1->fold2"]
            assert chosen == fitted[scores.index(max(scores))]
            assert point["held_out"] == point["tuning"][chosen]["fold2"]
        for row in method["curve"]:
            values = [
                p["held_out"]["mc2"]
                for p in method["points"]
                if p["n"] == row["n"] and "held_out" in p
            ]
            assert row["draws"] == len(values)
            if values:
                assert row["mc2"]["values"] == values
                assert row["mc2"]["mean"] == pytest.approx(statistics.fmean(values))
                assert row["mc2"]["std"] == pytest.approx(statistics.stdev(values))
                assert (row["mc2"]["min"], row["mc2"]["max"]) == (min(values), max(values))
    # SEA cannot fit 1 demonstration centred: every setting unfit there, the point failed
    first = report["methods"]["sea"]["curve"][0]
    assert first["draws"] == 0 and first["failed"] == [0, 1, 2] and first["mc2"] is None
    failed = report["methods"]["sea"]["points"][0]
    assert failed["n"] == 1 and "error" in failed and len(failed["unfit"]) == sea_grid
    assert report["methods"]["mean-diff"]["curve"][0]["draws"] == 3
    assert set(report["unedited"]) == {"mc1", "mc2", "mc3"}


@pytest.mark.filterwarnings("ignore:the (edit does nothing|kept ranks):UserWarning")
def test_a_sweep_point_is_the_fit_on_that_prefix(tmp_path):
    """The score at (draw, N) is the chosen setting fitted on the draw's first N
    demonstrations (captured on their own here), scored on the held-out fold."""
    model, tokenizer = make_tiny_model("llama"), make_tiny_tokenizer()
    folds = _folds()
    options = dataclasses.replace(OPTIONS, sizes=(4, 8), draws=1, methods=("sea",))
    report = run_sweep(model, tokenizer, POOL, folds, options, tmp_path, echo=_quiet)
    point = next(p for p in report["methods"]["sea"]["points"] if p["n"] == 4)
    chosen = next(
        s for s in METHODS["sea"].grid if setting_id(s) == point["selections"]["fold1->fold2"]
    )
    demos = [POOL[i] for i in report["draws"][0]["indices"][:4]]
    ctx = FitContext(model, tokenizer, demos, neutral="prompt", batch_size=4)
    intervention = METHODS["sea"].configure(None, chosen, ctx)
    with intervention.applied(model):
        direct = evaluate_truthfulqa(model, tokenizer, folds[2], batch_size=4).summary
    for metric in ("mc1", "mc2", "mc3"):
        assert point["held_out"][metric] == pytest.approx(direct[metric], rel=1e-5, abs=1e-9)


def test_sweep_refuses_bad_requests(tmp_path):
    model, tokenizer = make_tiny_model("llama"), make_tiny_tokenizer()
    folds = _folds()
    with pytest.raises(ValueError, match="fitted from"):
        run_sweep(
            model, tokenizer, POOL, folds, dataclasses.replace(OPTIONS, methods=("iti",)), tmp_path
        )
    with pytest.raises(ValueError, match="fewer than every size"):
        run_sweep(
            model, tokenizer, POOL[:3], folds, dataclasses.replace(OPTIONS, sizes=(5,)), tmp_path
        )
    assert parse_sizes("25, 5,10,5") == (5, 10, 25)
    for bad in ("", "5,x", "0,5"):
        with pytest.raises(ValueError, match="--sizes"):
            parse_sizes(bad)
    with pytest.raises(ValueError, match="draws"):
        SweepOptions(draws=0)


def test_sweep_cli_runs_and_resumes(tiny_model_dir, tmp_path):
    demos = write_demos(tmp_path / "demos.jsonl", POOL)
    out = tmp_path / "sweep"
    args = [
        "sweep", "--model", str(tiny_model_dir), "--demos", str(demos), "--sizes", "4,8",
        "--draws", "3", "--methods", "sea", "--mc-file", "mc_task.json", "--data-dir",
        str(FIXTURES), "--neutral", "prompt", "--batch-size", "4", "--out", str(out),
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "sweep.json").read_text())
    assert [row["n"] for row in report["methods"]["sea"]["curve"]] == [4, 8]
    assert (out / "sweep.png").stat().st_size > 1000
    assert "held-out TruthfulQA" in result.output
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "done earlier" in again.output
    assert json.loads((out / "sweep.json").read_text())["methods"] == report["methods"]
    bad = CliRunner().invoke(app, [*args[:5], "--methods", "iti"])
    assert bad.exit_code == 2 and "fitted from" in bad.output
