"""CD from the command line: ``sea compare``/``sea tune --amateur M`` load the amateur
folder and contrast against it (against a copy of the model itself the contrast is the
identity, against another model it moves the scores); an amateur whose tokenizer or
vocabulary is not the model's stops the run with an error naming ``--amateur``, before
anything is written."""

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spectral_edit.cli.app import app
from spectral_edit.demos.format import Demonstration, write_demos
from spectral_edit.experiments.methods import CONTRAST_GRID
from spectral_edit.experiments.settings import setting_id
from spectral_edit.experiments.tune import TUNE_CONFIGS

from .test_contrast import _fixture_data
from .tiny_models import make_tiny_model, make_tiny_tokenizer, tiny_config

FIXTURES = Path(__file__).parent / "fixtures" / "data"
DEMOS = [Demonstration(f"q: thing {i}\na:", f"yes it is {i}", f"no never {i}") for i in range(8)]


def _save(folder: Path, model, tokenizer) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def amateur_dir(tmp_path_factory):
    """Another tiny Gemma 3 (other weights) with the model's tiny tokenizer."""
    folder = tmp_path_factory.mktemp("amateur")
    return _save(folder, make_tiny_model("gemma3", seed=13), make_tiny_tokenizer())


@pytest.fixture()
def data_dir(tmp_path):
    """The fixtures plus hand-written HaluEval general records (sea tune's neutral texts)."""
    return _fixture_data(tmp_path)


def _compare_args(model: Path, demos: Path, out: Path, amateur: Path | None) -> list[str]:
    args = [
        "compare",
        *("--model", str(model), "--demos", str(demos), "--methods", "none,cd"),
        *("--mc-file", "mc_task.json", "--data-dir", str(FIXTURES)),
        *("--control-tasks", "arc_easy", "--control-limit", "2", "--harm-texts", "0"),
        *("--neutral", "prompt", "--out", str(out)),
    ]
    return args if amateur is None else [*args, "--amateur", str(amateur)]


def _compare(model: Path, demos: Path, out: Path, amateur: Path | None) -> dict:
    result = CliRunner().invoke(app, _compare_args(model, demos, out, amateur))
    assert result.exit_code == 0, result.output
    return json.loads((out / "report.json").read_text())


def _log_mc2(out: Path, report: dict, name: str) -> dict[str, list[float]]:
    """Per setting of ``name``: log MC2 of each tuning-fold question, from the stored units
    (the fixture's 2 questions have MC2 near 0 or 1, so the percentages hide changes)."""
    got = {}
    for setting in report["methods"][name]["tuning"]:
        unit = json.loads((out / "units" / name / f"{setting}--truthfulqa-fold1.json").read_text())
        got[setting] = [math.log(q["mc2"]) for q in unit["result"]["per_question"]]
    return got


def test_sea_compare_cd_contrasts_against_the_given_amateur(tiny_model_dir, amateur_dir, tmp_path):
    demos = write_demos(tmp_path / "demos.jsonl", DEMOS)
    report = _compare(tiny_model_dir, demos, tmp_path / "other", amateur_dir)
    assert set(report["methods"]) == {"none", "cd"}
    cd = _log_mc2(tmp_path / "other", report, "cd")
    assert set(cd) == {setting_id(s) for s in CONTRAST_GRID}  # the whole grid, as others
    (plain,) = _log_mc2(tmp_path / "other", report, "none").values()
    assert len(plain) == 2 and report["methods"]["cd"]["harm"] is None  # a readout
    # another model as the amateur moves the scores of every setting (β > 0 in all)
    for scores in cd.values():
        assert max(abs(a - b) for a, b in zip(scores, plain, strict=True)) > 0.1, (cd, plain)
    # a copy of the model itself as the amateur: lp_m − lp_a = 0, the contrast is the model
    itself = _compare(tiny_model_dir, demos, tmp_path / "itself", tiny_model_dir)
    for scores in _log_mc2(tmp_path / "itself", itself, "cd").values():
        assert scores == pytest.approx(plain, abs=1e-3)
    # without --amateur, cd is skipped with a message saying why
    result = CliRunner().invoke(app, _compare_args(tiny_model_dir, demos, tmp_path / "no", None))
    assert result.exit_code == 0, result.output
    assert "cd skipped" in result.output and "--amateur" in result.output
    assert set(json.loads((tmp_path / "no" / "report.json").read_text())["methods"]) == {"none"}


@pytest.fixture(scope="module")
def mismatched(tmp_path_factory):
    """Amateurs that do not fit the model: one whose tokenizer has an extra token, one with
    the model's tokenizer but a wider LM head (another vocabulary)."""
    root = tmp_path_factory.mktemp("mismatched")
    tokenizer = make_tiny_tokenizer()
    tokenizer.add_tokens(["zzzq"])
    other_tokenizer = _save(root / "tokenizer", make_tiny_model("gemma3", seed=3), tokenizer)
    from transformers import AutoModelForCausalLM

    config = tiny_config("gemma3")
    config.vocab_size += 16
    wider = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    wider_vocab = _save(root / "vocab", wider, make_tiny_tokenizer())
    return {"tokenizer differs": other_tokenizer, "LM head has": wider_vocab}


@pytest.mark.parametrize("problem", ["tokenizer differs", "LM head has"])
def test_sea_compare_refuses_an_amateur_that_does_not_fit(
    tiny_model_dir, mismatched, tmp_path, problem
):
    demos = write_demos(tmp_path / "demos.jsonl", DEMOS)
    amateur, out = mismatched[problem], tmp_path / "cmp"
    result = CliRunner().invoke(app, _compare_args(tiny_model_dir, demos, out, amateur))
    assert result.exit_code == 2, result.output
    assert f"--amateur {amateur}: its {problem}" in " ".join(result.output.split())
    assert not out.exists()  # stopped before anything ran


def _tune_args(model: Path, demos: Path, data_dir: Path, out: Path, amateur: Path) -> list[str]:
    return [
        "tune",
        *("--model", str(model), "--demos", str(demos), "--methods", "cd"),
        *("--mc-file", "mc_task.json", "--data-dir", str(data_dir)),
        *("--control-tasks", "arc_easy", "--control-limit", "1", "--kl-texts", "2"),
        *("--evaluations", "4", "--budget-kl", "10", "--neutral", "prompt"),
        *("--out", str(out), "--amateur", str(amateur)),
    ]


def test_sea_tune_cd_with_an_amateur(tiny_model_dir, amateur_dir, mismatched, data_dir, tmp_path):
    demos = write_demos(tmp_path / "demos.jsonl", DEMOS)
    out = tmp_path / "tune"
    result = CliRunner().invoke(app, _tune_args(tiny_model_dir, demos, data_dir, out, amateur_dir))
    assert result.exit_code == 0, result.output
    cd = json.loads((out / "report.json").read_text())["methods"]["cd"]
    assert cd["evaluations_used"] == 4  # the same budget as every method
    assert set(cd["calibrations"]) == {setting_id(c) for c in TUNE_CONFIGS["cd"]}
    probes = [p for c in cd["calibrations"].values() for p in c["probes"]]
    assert probes and all(p["harms"]["kl_nats"] > 0 for p in probes)  # against the amateur
    bad, out = mismatched["tokenizer differs"], tmp_path / "bad"
    refused = CliRunner().invoke(app, _tune_args(tiny_model_dir, demos, data_dir, out, bad))
    assert refused.exit_code == 2, refused.output
    assert f"--amateur {bad}: its tokenizer differs" in " ".join(refused.output.split())
    assert not out.exists()
