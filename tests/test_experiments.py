"""The experiments' typed pieces: settings (byte-identical ids), the fold protocol, the
demonstration loader, and the layering (no rich or typer below the CLI)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from spectral_edit.data.errors import DataFileMissing
from spectral_edit.experiments.demo_job import load_truthfulness_demos
from spectral_edit.experiments.folds import DIRECTIONS, Direction, best_on_fold
from spectral_edit.experiments.methods import METHODS
from spectral_edit.experiments.settings import (
    SeaSetting,
    SteeringSetting,
    grid,
    setting_fields,
    setting_id,
)

EXPERIMENTS = Path(__file__).resolve().parents[1] / "spectral_edit" / "experiments"

# the ids every stored comparison and report uses: they must never change
_CONTRAST_IDS = [
    f"beta={beta},plausibility={plausibility}" for beta in (0.5, 2.0) for plausibility in (0.1, 0.0)
]
"""ICD and CD (issue #15): new methods, so new ids; every older method's ids are unchanged."""

SETTING_IDS = {
    "none": ["default"],
    "icd": _CONTRAST_IDS,
    "cd": _CONTRAST_IDS,
    "sea": [  # last-4 gave way to the signature heuristic (issue #15); last-8 ids unchanged
        "layers=last-8,ratio=0.99",
        "layers=last-8,ratio=0.995",
        "layers=top-signature-8,ratio=0.99",
        "layers=top-signature-8,ratio=0.995",
    ],
    "phi-sea": [
        "layers=last-4,feature=tanh",
        "layers=last-4,feature=squared-exponential",
        "layers=last-8,feature=tanh",
        "layers=last-8,feature=squared-exponential",
    ],
    "mean-diff": [
        "layers=last-4,alpha=0.5",
        "layers=last-4,alpha=2.0",
        "layers=last-8,alpha=0.5",
        "layers=last-8,alpha=2.0",
    ],
    "pca-vector": [
        "layers=last-4,alpha=0.5",
        "layers=last-4,alpha=2.0",
        "layers=last-8,alpha=0.5",
        "layers=last-8,alpha=2.0",
    ],
    "iti": ["top_k=8,alpha=5.0", "top_k=8,alpha=15.0", "top_k=24,alpha=5.0", "top_k=24,alpha=15.0"],
    "leace": [
        "layers=last-4,alpha=0.5",
        "layers=last-4,alpha=1.0",
        "layers=last-8,alpha=0.5",
        "layers=last-8,alpha=1.0",
    ],
    "lora": ["alpha=0.5", "alpha=1.0", "alpha=1.5", "alpha=2.0"],
    "dola": [
        "premature=early,relative_top=0.1",
        "premature=early,relative_top=0.0",
        "premature=late,relative_top=0.1",
        "premature=late,relative_top=0.0",
    ],
}


def test_setting_ids_and_fields_are_unchanged():
    assert {n: [setting_id(s) for s in m.grid] for n, m in METHODS.items()} == SETTING_IDS
    fields = setting_fields(METHODS["phi-sea"].grid[1])
    assert fields == {"layers": "last-4", "feature": "squared-exponential"}
    assert type(fields["feature"]) is not str  # the typed enum, still equal to its string
    assert setting_fields({"x": 1}) == {"x": 1} and setting_id({"x": 1}) == "x=1"
    with pytest.raises(TypeError):
        setting_fields(3)


def test_settings_build_their_fit_options():
    options = SeaSetting("last-4", 0.995).options()
    assert (options.layers, options.pos_ratio, options.neg_ratio) == ("last-4", 0.995, 0.995)
    assert options.centered
    assert METHODS["phi-sea"].grid[0].options().feature == "tanh"
    assert grid(SteeringSetting, layers=("a", "b"), alpha=(1.0,)) == (
        SteeringSetting("a", 1.0),
        SteeringSetting("b", 1.0),
    )


def test_directions_and_the_tuning_choice():
    assert Direction.parse(" 2-1") == DIRECTIONS[1] and DIRECTIONS[0].label == "fold1->fold2"
    for bad in ("1-1", "1", "1-3", "a-b"):
        with pytest.raises(ValueError, match="direction"):
            Direction.parse(bad)
    scores = {"a": {"mc1": 10, "mc2": 30}, "b": {"mc1": 30, "mc2": 10}, "c": {"mc1": 0, "mc2": 0}}
    assert best_on_fold(["c", "a", "b"], scores.__getitem__) == "a"  # ties: the first
    with pytest.raises(ValueError):
        best_on_fold([], scores.__getitem__)


def test_the_benchmarks_can_refuse_the_shipped_fallback(tmp_path):
    said = []
    demos, source = load_truthfulness_demos(3, tmp_path, echo=said.append)
    assert len(demos) == 3 and source.startswith("shipped") and "HaluEval not available" in said[0]
    with pytest.raises(DataFileMissing):
        load_truthfulness_demos(3, tmp_path, fallback=False)


def test_experiments_import_neither_rich_nor_typer():
    for path in EXPERIMENTS.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.split(".")[0] in ("rich", "typer") for n in names), path.name
    modules = ", ".join(f"spectral_edit.experiments.{p.stem}" for p in EXPERIMENTS.glob("*.py"))
    code = (
        "import sys; sys.modules['rich'] = None; sys.modules['typer'] = None; "
        "sys.modules['matplotlib'] = None; import " + modules
    )
    subprocess.run([sys.executable, "-c", code], check=True)
