"""The ``sea`` options: typed choices list their values, ``sea fit`` checks its options
before loading the model, ``sea generate`` decodes only shell escapes."""

import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

import spectral_edit.hf.generation as generation
from spectral_edit.cli.app import app
from spectral_edit.cli.generate import decode_shell_escapes
from spectral_edit.demos.format import Demonstration, write_demos

runner = CliRunner()
FRENCH = "Qu'est-ce que la vérité ? 真相"


@pytest.fixture()
def demos_file(tmp_path):
    demos = [Demonstration(f"q: {i}\na:", f"yes {i}", f"no {i}") for i in range(4)]
    return write_demos(tmp_path / "demos.jsonl", demos)


def test_decode_shell_escapes_keeps_other_characters():
    assert decode_shell_escapes(FRENCH + "\\nA:") == FRENCH + "\nA:"
    assert decode_shell_escapes("a\\tb\\\\nc") == "a\tb\\nc"  # \\ is one backslash
    assert decode_shell_escapes("C:\\data \\x41 \\u00e9 é") == "C:\\data \\x41 \\u00e9 é"


def test_generate_passes_non_ascii_prompt_intact(tiny_model_dir, monkeypatch):
    seen: list[list[str]] = []
    real = generation.generate_greedy

    def recording(model, tokenizer, prompts, **kwargs):
        seen.append(list(prompts))
        return real(model, tokenizer, prompts, **kwargs)

    monkeypatch.setattr(generation, "generate_greedy", recording)
    args = ["generate", "--model", str(tiny_model_dir), "--max-new-tokens", "2"]
    result = runner.invoke(app, [*args, FRENCH + "\\nA:"])
    assert result.exit_code == 0, result.output
    assert seen == [[FRENCH + "\nA:"]]


@pytest.mark.parametrize(
    ("option", "value", "valid"),
    [
        ("--site", "mpl", "'residual', 'mlp'"),
        ("--merge", "max", "'norm', 'mean'"),
        ("--neutral", "model", "'generate', 'prompt', 'given'"),
        ("--token", "first", "'last', 'mean', 'random'"),
        ("--feature", "relu", "'linear', 'tanh', 'elu', 'squared-exponential'"),
    ],
)
def test_fit_choice_typo_lists_valid_values(demos_file, tmp_path, option, value, valid):
    args = ["fit", "--model", str(tmp_path / "no-model"), "--demos", str(demos_file)]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "e.safetensors"), option, value])
    assert result.exit_code == 2
    text = " ".join(result.output.replace("│", " ").split())
    assert option in text and valid in text, result.output


def test_fit_feature_accepts_case_and_underscore(tiny_model_dir, demos_file, tmp_path):
    from spectral_edit import SpectralEditor

    out = tmp_path / "se.safetensors"
    args = ["fit", "--model", str(tiny_model_dir), "--demos", str(demos_file), "--out", str(out)]
    args += ["--layers", "last-1", "--neutral", "prompt", "--feature", "Squared_Exponential"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert SpectralEditor.load(out).feature == "squared-exponential"


def test_fit_random_token_records_its_seed_and_the_seed_matters(
    tiny_model_dir, demos_file, tmp_path
):
    from spectral_edit import SpectralEditor

    factors = {}
    for seed in (0, 0, 5):
        out = tmp_path / f"random{seed}.safetensors"
        args = ["fit", "--model", str(tiny_model_dir), "--demos", str(demos_file)]
        args += ["--out", str(out), "--layers", "last-1", "--neutral", "prompt"]
        result = runner.invoke(app, [*args, "--token", "random", "--token-seed", str(seed)])
        assert result.exit_code == 0, result.output
        editor = SpectralEditor.load(out)
        assert editor.metadata["token"] == "random"
        assert editor.metadata["token_seed"] == seed
        factors.setdefault(seed, []).append(editor.pos_factors[0])
    torch.testing.assert_close(factors[0][0], factors[0][1], atol=0, rtol=0)
    assert factors[0][0].shape != factors[5][0].shape or not torch.allclose(
        factors[0][0], factors[5][0]
    )


def test_fit_refuses_a_negative_token_seed(demos_file, tmp_path):
    args = ["fit", "--model", str(tmp_path / "no-model"), "--demos", str(demos_file)]
    result = runner.invoke(
        app, [*args, "--out", str(tmp_path / "e.safetensors")] + ["--token-seed", "-1"]
    )
    assert result.exit_code == 2
    assert "--token-seed" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pos-ratio", "1.5"], "--pos-ratio must be in (0, 1]"),
        (["--neg-ratio", "0"], "--neg-ratio must be in (0, 1]"),
        (["--pos-rank", "0"], "--pos-rank must be an integer >= 1"),
        (["--alpha", "inf"], "--alpha must be a finite number"),
    ],
)
def test_fit_bad_option_fails_before_loading_the_model(demos_file, tmp_path, args, message):
    # the model does not exist: the option error must come first
    base = ["fit", "--model", str(tmp_path / "no-model"), "--demos", str(demos_file)]
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "e.safetensors"), *args])
    assert result.exit_code == 2
    assert message in result.output and "no-model" not in result.output, result.output


@pytest.mark.parametrize("command", ["demo", "compare"])
def test_jobs_refuse_given_neutral(command):
    result = runner.invoke(app, [command, "--neutral", "given"])
    assert result.exit_code == 2
    assert "'generate', 'prompt'" in " ".join(result.output.replace("│", " ").split())


def test_halueval_source_lists_values_and_refuses_others(tmp_path):
    help_text = runner.invoke(app, ["demos", "halueval", "--help"], env={"COLUMNS": "160"}).output
    assert "<one-turn|multi-turn|both|full>" in help_text
    out = tmp_path / "h.jsonl"
    result = runner.invoke(app, ["demos", "halueval", "--out", str(out), "--source", "two"])
    assert result.exit_code == 2 and "--source must be one of" in result.output


def test_library_imports_without_the_cli_extra():
    """typer and rich belong to spectral_edit/cli only."""
    code = (
        "import sys\n"
        "sys.modules['rich'] = sys.modules['typer'] = None\n"
        "import spectral_edit, spectral_edit.util.report, spectral_edit.demos.activations\n"
        "import spectral_edit.evaluate.control, spectral_edit.evaluate.truthfulqa\n"
        "import spectral_edit.evaluate.bbq, spectral_edit.evaluate.crows_pairs\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_demo_bad_ratio_fails_before_anything_runs(tmp_path):
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--pos-ratio", "2", "--out", str(out)])
    assert result.exit_code == 2 and "--pos-ratio must be in (0, 1]" in result.output
    assert not out.exists()
