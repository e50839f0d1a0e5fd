"""benchmarks/perf.py end to end on a tiny model folder: the parts that need no lm-eval
(capture, fit, generation), each in its own process, the JSON and the Markdown table,
and a rerun of one part that keeps the others."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tiny_models import make_tiny_model, make_tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "perf.py"
FIXTURES = Path(__file__).parent / "fixtures" / "data"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("perf")
    model_dir = root / "tiny"
    make_tiny_model("gemma3", seed=5).save_pretrained(model_dir)
    make_tiny_tokenizer().save_pretrained(model_dir)
    data = root / "data" / "truthfulqa"
    data.mkdir(parents=True)
    shutil.copy(FIXTURES / "truthfulqa" / "mc_task.json", data / "mc_task_v0.json")
    demos = root / "demos.jsonl"
    rows = [
        {
            "prompt": f"Q: is {w} the answer?\nA:",
            "positive": f" yes, {w} is",
            "negative": f" no {w}",
        }
        for w in ("a", "the", "question", "true", "false", "and")
    ]
    demos.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"model": model_dir, "data": root / "data", "demos": demos, "root": root}


def run(setup: dict[str, Path], *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(SCRIPT), "--model", str(setup["model"])]
    command += ["--demos", str(setup["demos"]), "--data-dir", str(setup["data"])]
    command += ["--output", str(setup["root"] / "perf.json"), "--threads", "1", *extra]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_perf_parts_json_and_table(setup: dict[str, Path]) -> None:
    done = run(
        setup,
        *("--parts", "capture,fit,generation", "--capture-demos", "4", "--fit-layers", "last-2"),
        *("--gen-fit-demos", "6", "--gen-prompts", "3", "--gen-tokens", "4"),
        *("--gen-batch-size", "2", "--gen-repeats", "2"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((setup["root"] / "perf.json").read_text())
    parts = report["parts"]
    assert set(parts) == {"capture", "fit", "generation"}
    for part in parts.values():
        assert part["process_peak_rss_mib"] > 0 and "measured_at" in part

    cap = parts["capture"]
    assert cap["demonstrations"] == 4 and cap["layers"] == [1, 2]  # tiny gemma3: 3 layers
    for key in ("plain_forward", "capture"):
        assert cap[key]["seconds"] > 0 and cap[key]["peak_rss_mib"] > 0
        assert cap[key]["cuda_peak_mib"] is None
    # layer 2 is the last one (final-normed in hidden_states): layer 1 is compared
    assert 0 <= cap["max_abs_difference"] <= 1e-4 * cap["activation_max_abs"]

    fit = parts["fit"]
    assert fit["demonstrations"] == 6 and fit["layers"] == [1, 2]
    assert fit["fit"]["seconds"] > 0 and set(fit["ranks"]) == {"1", "2"}

    gen = parts["generation"]
    assert gen["editor"]["edited_layers"] == gen["editor"]["num_layers"] == 3
    for key in ("unedited", "edited"):
        side = gen[key]
        assert len(side["all_seconds"]) == 2
        assert side["seconds"] == pytest.approx(statistics.median(side["all_seconds"]), abs=1e-3)
        assert side["tokens_per_second"] == pytest.approx(3 * 4 / side["seconds"], rel=1e-2)
        assert len(side["all_cpu_seconds"]) == 2 and side["cpu_seconds"] > 0
    # the overhead is the median of the back-to-back pairs' ratios (wall and CPU time)
    for key, clock in (
        ("overhead_percent", "all_seconds"),
        ("cpu_overhead_percent", "all_cpu_seconds"),
    ):
        pairs = zip(gen["edited"][clock], gen["unedited"][clock], strict=True)
        expected = 100 * (statistics.median(e / u for e, u in pairs) - 1)
        assert gen[key] == pytest.approx(expected, abs=0.01)
    hooks = gen["edit_hooks"]  # the edit's own time, inside an edited run
    assert 0 < hooks["in_edit_hooks"] < hooks["run"]
    assert hooks["share_percent"] == pytest.approx(
        100 * hooks["in_edit_hooks"] / hooks["run"], abs=0.01
    )

    table = (setup["root"] / "perf.md").read_text()
    assert "| measurement | size | seconds |" in table
    assert "generation, SEA on 3/3 layers" in table and "overhead" in table
    assert "of an edited run inside the edit hooks" in table
    assert "capture (shared-prefix cache)" in table and "fit_editor" in table

    # rerun the fit alone: the other parts are kept as they were
    again = run(setup, "--parts", "fit", "--fit-layers", "all", "--fit-demos", "5")
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads((setup["root"] / "perf.json").read_text())["parts"]
    assert second["capture"] == cap and second["generation"] == gen
    assert second["fit"]["layers"] == [0, 1, 2] and second["fit"]["demonstrations"] == 5


def test_perf_refuses_unknown_parts(setup: dict[str, Path]) -> None:
    done = run(setup, "--parts", "fit,nonsense")
    assert done.returncode != 0 and "nonsense" in done.stderr
