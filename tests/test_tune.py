"""``sea tune`` end to end on a tiny model: probes on the tuning part, the chosen setting on
held-out items, the budget, resume without recomputing, the report files, BBQ, the CLI."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spectral_edit.cli.app import app
from spectral_edit.data import load_fold, load_mc_task
from spectral_edit.data.control import load_control_task
from spectral_edit.data.splits import bbq_group_key
from spectral_edit.data.truthfulqa import split_mc_by_fold
from spectral_edit.demos.format import Demonstration, write_demos
from spectral_edit.evaluate.control import evaluate_control
from spectral_edit.evaluate.kl import build_kl_reference, measure_kl
from spectral_edit.evaluate.truthfulqa import evaluate_truthfulqa
from spectral_edit.experiments.calibrate import Budget, log_grid
from spectral_edit.experiments.methods import METHODS, FitContext, MethodSpec
from spectral_edit.experiments.settings import setting_id
from spectral_edit.experiments.tune import (
    DEFAULT_ALPHA_RANGES,
    TUNE_CONFIGS,
    KLMeter,
    alpha_range,
    contract_kl_meter,
    parse_alpha_ranges,
    run_tune,
    split_evaluations,
)
from spectral_edit.experiments.tune_plot import pareto_front
from spectral_edit.experiments.tune_results import TuneOptions
from spectral_edit.experiments.tune_targets import (
    TruthfulQATarget,
    load_tune_data,
)

from .tiny_models import make_tiny_model, make_tiny_tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "data"
DEMOS = [Demonstration(f"q: thing {i}\na:", f"yes it is {i}", f"no never {i}") for i in range(12)]
TEXTS = [
    "The river runs past the old mill and on into the valley below.",
    "Bread needs flour, water, salt and a little yeast, then time.",
    "Trains leave the north station every hour on weekdays.",
    "The museum opens at nine in the morning and closes at five.",
]
OPTIONS = TuneOptions(
    methods=("none", "mean-diff", "sea", "dola"),
    evaluations=6,
    control_tasks=("arc_easy", "boolq"),
    control_limit=1,
    kl_texts=2,
    neutral="prompt",
    batch_size=8,
)


def _quiet(message: str) -> None:
    """No progress messages."""


class CountingKL:
    """The KL of ``evaluate.kl``, counting how often references are built and KL measured."""

    def __init__(self):
        self.builds: list[tuple[str, ...]] = []
        self.measures = 0
        inner = contract_kl_meter(max_tokens=32)

        def build(model, tokenizer, texts):
            self.builds.append(tuple(texts))
            return inner.build(model, tokenizer, texts)

        def measure(model, reference, editor):
            self.measures += 1
            return inner.measure(model, reference, editor)

        self.meter = KLMeter(build, measure, inner.key)


@pytest.fixture(scope="module")
def tiny():
    return make_tiny_model("llama"), make_tiny_tokenizer()


@pytest.fixture()
def data_dir(tmp_path):
    """The fixtures plus hand-written HaluEval general records (neutral texts)."""
    folder = tmp_path / "data"
    shutil.copytree(FIXTURES, folder)
    records = [
        {
            "ID": i,
            "user_query": f"Tell me something {i}.",
            "chatgpt_response": t,
            "hallucination": "no",
        }
        for i, t in enumerate(TEXTS)
    ]
    path = folder / "halueval" / "general_data.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return folder


def _target() -> TruthfulQATarget:
    questions = load_mc_task(FIXTURES / "truthfulqa" / "mc_task.json")
    fold = {f: tuple(split_mc_by_fold(questions, load_fold(f, FIXTURES))) for f in (1, 2)}
    return TruthfulQATarget(fold[1], fold[2])


def _tune(tiny, out, data_dir, options=OPTIONS, meter=None, **kwargs):
    model, tokenizer = tiny
    return run_tune(
        model,
        tokenizer,
        DEMOS,
        _target(),
        options,
        out,
        texts=TEXTS,
        data_dir=data_dir,
        model_name="tiny",
        kl=meter,
        echo=_quiet,
        **kwargs,
    )


def _unit(out, method, config, alpha, part="tune"):
    path = out / "units" / method / f"{config}--alpha={alpha!r}--{part}.json"
    return json.loads(path.read_text())["result"]


def test_tune_end_to_end_budget_and_resume(tiny, tmp_path, data_dir):
    model, tokenizer = tiny
    out = tmp_path / "tune"
    kl = CountingKL()
    free = _tune(tiny, out, data_dir, meter=kl.meter)

    # none and dola have no strength: skipped, said so
    assert set(free.skipped) == {"none", "dola"} and list(free.methods) == ["mean-diff", "sea"]
    # the KL references: built once per text set for the whole run
    assert kl.builds == [tuple(TEXTS[:2]), tuple(TEXTS[2:])]
    baseline = free.baseline
    # the unedited units: tuning vs held-out items really differ
    for part, offset, questions in (("tune", 0, _target().tune), ("report", 1, _target().report)):
        control = evaluate_control(
            model, tokenizer, ["arc_easy", "boolq"], data_dir=data_dir, limit=1, offset=offset
        )
        stored = baseline.control_tune if part == "tune" else baseline.control_report
        assert stored["tasks"]["arc_easy"]["acc"] == control.summary["tasks"]["arc_easy"]["acc"]
        target = baseline.tune_target if part == "tune" else baseline.report_target
        direct = evaluate_truthfulqa(model, tokenizer, questions, batch_size=8).summary
        assert target["mc2"] == pytest.approx(direct["mc2"])

    for name, result in free.tuned.items():
        lo, hi = DEFAULT_ALPHA_RANGES[name]
        assert list(result.calibrations) == [setting_id(c) for c in TUNE_CONFIGS[name]]
        assert result.used == OPTIONS.evaluations  # the same total for every method
        for calibration in result.calibrations.values():
            assert calibration.mode == "grid"
            assert [p.alpha for p in calibration.probes] == pytest.approx(log_grid(lo, hi, 3))
        every = [p for c in result.calibrations.values() for p in c.probes]
        assert result.feasible and result.best.target == max(p.target for p in every)
        assert result.held_out is not None
    # a probe's harms are its stored measurements against the unedited model
    md = free.tuned["mean-diff"]
    config = TUNE_CONFIGS["mean-diff"][0]
    probe = md.calibrations[setting_id(config)].probes[1]
    unit = _unit(out, "mean-diff", setting_id(config), probe.alpha)
    loss = baseline.control_tune["average"]["acc"] - unit["control"]["average"]["acc"]
    assert probe.harms["control_points"] == pytest.approx(loss)
    assert probe.harms["kl_nats"] == unit["kl"]["kl_mean"] > 0
    assert probe.target == pytest.approx((unit["target"]["mc1"] + unit["target"]["mc2"]) / 2)
    # the held-out figures are those of the chosen editor on the held-out items and texts
    ctx = FitContext(model, tokenizer, DEMOS, neutral="prompt", batch_size=8)
    chosen = {setting_id(c): c for c in TUNE_CONFIGS["mean-diff"]}[md.chosen]
    editor = METHODS["mean-diff"].configure(None, chosen, ctx).editor.with_options(alpha=md.alpha)
    with editor.apply(model):
        held = evaluate_truthfulqa(model, tokenizer, _target().report, batch_size=8).summary
    assert md.held_out.target["mc2"] == pytest.approx(held["mc2"])
    reference = build_kl_reference(model, tokenizer, TEXTS[2:], max_tokens=32)
    kl_held = measure_kl(model, reference, editor).summary["kl_mean"]
    assert md.held_out.kl["kl_mean"] == pytest.approx(kl_held, rel=1e-6)

    # files
    for name in ("report.json", "report.md", "pareto.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "report.md").read_text()
    assert "| mean-diff |" in markdown and "- dola: not tuned" in markdown
    assert "### sea" in markdown and "**chosen**" in markdown
    assert free.summary["mean-diff"]["mc2"] == md.held_out.target["mc2"]
    assert free.summary["mean-diff"]["alpha"] == md.alpha
    written = json.loads((out / "report.json").read_text())
    assert written["methods"]["mean-diff"]["alpha"] == md.alpha
    assert len(written["methods"]["sea"]["calibrations"]) == 2

    # a KL budget between the two ends of a configuration: bisection, reusing both ends
    config_id = setting_id(config)
    ends = md.calibrations[config_id].probes
    limit = (ends[0].harms["kl_nats"] * ends[2].harms["kl_nats"]) ** 0.5
    assert ends[0].harms["kl_nats"] < limit < ends[2].harms["kl_nats"]
    budgeted = dataclasses.replace(OPTIONS, budget=Budget(kl_nats=limit))
    before = {p.name for p in (out / "units").rglob("*.json")}
    kl = CountingKL()
    bounded = _tune(tiny, out, data_dir, budgeted, kl.meter)
    created = {p.name for p in (out / "units").rglob("*.json")} - before - {"error.json"}
    assert kl.measures == len(created) > 0  # only what was not stored was measured
    mdb = bounded.tuned["mean-diff"].calibrations[config_id]
    assert mdb.mode == "bisection" and [p.alpha for p in mdb.probes[:2]] == [
        ends[0].alpha,
        ends[2].alpha,
    ]
    for result in bounded.tuned.values():
        assert result.used == OPTIONS.evaluations
        if result.best is not None:
            assert result.best.harms["kl_nats"] <= limit
    assert f"kl_nats ≤ {limit:g}" in (out / "report.md").read_text()

    # the same run again: nothing is recomputed, not even a KL reference
    first = json.loads((out / "report.json").read_text())
    kl = CountingKL()
    _tune(tiny, out, data_dir, budgeted, kl.meter)
    assert kl.measures == 0 and kl.builds == []
    assert json.loads((out / "report.json").read_text()) == first


def test_no_feasible_setting_and_a_failing_method(tiny, tmp_path, data_dir):
    """A zero KL budget: even the smallest α is out (one probe per configuration, said in
    the report); a method that raises is reported and the others go on."""
    calls = []

    def broken(state, setting, ctx):
        calls.append(1)
        raise RuntimeError("planted failure")

    registry = {
        **METHODS,
        "broken": MethodSpec("broken", "fails", ({"x": 1},), lambda c: None, broken),
    }
    options = dataclasses.replace(
        OPTIONS, methods=("broken", "mean-diff"), budget=Budget(kl_nats=0.0), evaluations=4
    )
    out = tmp_path / "tune"
    report = _tune(
        tiny,
        out,
        data_dir,
        options,
        registry=registry,
        configs={**TUNE_CONFIGS, "broken": ({"x": 1},)},
    )
    assert report.failed == ["broken"] and (out / "units" / "broken" / "error.json").is_file()
    md = report.tuned["mean-diff"]
    assert not md.feasible and md.best is None and md.held_out is None
    assert [c.used for c in md.calibrations.values()] == [1, 1]
    assert all("no feasible setting" in c.reason for c in md.calibrations.values())
    row = next(r for r in report.table().rows if r[0] == "mean-diff")
    assert row[3] == "no"
    markdown = (out / "report.md").read_text()
    assert "failed: RuntimeError: planted failure" in markdown and "no feasible setting" in markdown
    assert (out / "pareto.png").is_file()
    assert (
        json.loads((out / "report.json").read_text())["methods"]["mean-diff"]["feasible"] is False
    )


def test_bbq_target_rejects_a_higher_stereotype_rate(tiny, tmp_path):
    data = load_tune_data("bbq", n_demos=2, per_fold=3, data_dir=FIXTURES, seed=0)
    target = data.target
    assert {bbq_group_key(i) for i in target.tune}.isdisjoint(
        bbq_group_key(i) for i in target.report
    )
    model, tokenizer = tiny
    options = dataclasses.replace(OPTIONS, methods=("mean-diff",), evaluations=4)
    report = run_tune(
        model,
        tokenizer,
        data.demos,
        target,
        options,
        tmp_path,
        texts=TEXTS,
        data_dir=FIXTURES,
        model_name="tiny",
        echo=_quiet,
    )
    assert report.budget.limits == {"stereotype_points": 0.0}
    result = report.tuned["mean-diff"]
    for calibration in result.calibrations.values():
        assert calibration.mode == "bisection"
        for p in calibration.probes:
            assert p.feasible == (p.harms["stereotype_points"] <= 0.0)
    if result.feasible:
        assert result.best.harms["stereotype_points"] <= 0.0
        assert set(result.held_out.target) >= {"accuracy", "stereotype_rate", "bias_score_ambig"}
    assert "stereotype_rate (held out)" in (tmp_path / "report.md").read_text()


def test_helpers_ranges_splits_front_and_offsets():
    assert parse_alpha_ranges(["0.1,4", "iti=1,40"]) == (("*", 0.1, 4.0), ("iti", 1.0, 40.0))
    for bad in ("4,1", "0,1", "1", "a,b"):
        with pytest.raises(ValueError):
            parse_alpha_ranges([bad])
    options = dataclasses.replace(OPTIONS, alpha_ranges=parse_alpha_ranges(["iti=1,40"]))
    assert alpha_range(options, "iti") == (1.0, 40.0)
    assert alpha_range(options, "sea") == DEFAULT_ALPHA_RANGES["sea"]
    star = dataclasses.replace(OPTIONS, alpha_ranges=parse_alpha_ranges(["0.2,2", "iti=1,40"]))
    assert alpha_range(star, "sea") == (0.2, 2.0) and alpha_range(star, "iti") == (1.0, 40.0)
    assert split_evaluations(7, 2) == [4, 3] and split_evaluations(8, 1) == [8]
    with pytest.raises(ValueError):
        split_evaluations(1, 2)
    assert all(len(c) == 2 for n, c in TUNE_CONFIGS.items() if n != "lora")
    assert set(TUNE_CONFIGS) == set(METHODS) - {"none", "dola"}
    # the frontier: less harm and more gain; (2, 1) is dominated by (1, 2)
    points = [(0.0, 0.0), (2.0, 1.0), (1.0, 2.0), (3.0, 5.0), (float("nan"), 9.0), (3.0, 5.0)]
    assert pareto_front(points) == [0, 2, 3]
    # control offsets: items [n, 2n) are the next ones, offset 0 is the old behaviour
    every = load_control_task("arc_easy", FIXTURES)
    assert load_control_task("arc_easy", FIXTURES, limit=1, offset=1) == every[1:2]
    assert load_control_task("arc_easy", FIXTURES, limit=2) == every[:2]
    with pytest.raises(ValueError):
        load_control_task("arc_easy", FIXTURES, offset=-1)
    with pytest.raises(ValueError, match="gsm8k"):
        TuneOptions(methods=("sea",), control_tasks=("gsm8k",))


def test_run_tune_checks_its_inputs(tiny, tmp_path, data_dir):
    with pytest.raises(ValueError, match="neutral texts"):
        run_tune(*tiny, DEMOS, _target(), OPTIONS, tmp_path, texts=TEXTS[:3], echo=_quiet)
    few = dataclasses.replace(OPTIONS, evaluations=1)
    with pytest.raises(ValueError, match="cannot be split"):
        run_tune(*tiny, DEMOS, _target(), few, tmp_path, texts=TEXTS, echo=_quiet)
    short = dataclasses.replace(OPTIONS, control_limit=2)  # arc_easy has 3 items, not 4
    with pytest.raises(ValueError, match="arc_easy has 3 items: control_limit 2 needs 4"):
        run_tune(*tiny, DEMOS, _target(), short, tmp_path, texts=TEXTS, data_dir=data_dir)
    unknown = dataclasses.replace(OPTIONS, methods=("magic",))
    with pytest.raises(ValueError, match="unknown method"):
        run_tune(*tiny, DEMOS, _target(), unknown, tmp_path, texts=TEXTS, echo=_quiet)


def test_sea_tune_cli(tiny_model_dir, tmp_path, data_dir):
    demos = write_demos(tmp_path / "demos.jsonl", DEMOS)
    out = tmp_path / "cli"
    args = [
        "tune",
        "--model",
        str(tiny_model_dir),
        "--demos",
        str(demos),
        "--methods",
        "none,mean-diff",
        "--mc-file",
        "mc_task.json",
        "--data-dir",
        str(data_dir),
        "--control-tasks",
        "arc_easy",
        "--control-limit",
        "1",
        "--kl-texts",
        "2",
        "--evaluations",
        "2",
        "--budget-kl",
        "10",
        "--alpha-range",
        "mean-diff=0.1,2",
        "--neutral",
        "prompt",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["skipped"] == {"none": "the unedited model: no strength to tune"}
    md = report["methods"]["mean-diff"]
    assert md["interval"] == [0.1, 2.0] and md["evaluations_used"] == 2
    assert report["budget"]["kl_nats"] == 10.0 and (out / "pareto.png").is_file()
    bad = CliRunner().invoke(app, [*args, "--alpha-range", "3,1"])
    assert bad.exit_code == 2 and "α range" in bad.output
    many = CliRunner().invoke(app, [*args[:-2], "--kl-texts", "3", "--out", str(out)])
    assert many.exit_code == 2 and "neutral texts" in many.output
