"""Failure catalogue, fit inputs: non-finite, zero or misshapen activations, bad ratios,
ranks, layer specs and Φ-SEA scales, and models whose decoder layers cannot be found.

Each case is tried through the Python API (the project's own exception, naming the layer,
option or cause) and, where a command line can reach it, through ``sea fit`` (exit 2, the
same message, no editor file written and an earlier one kept).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch

from spectral_edit.core.options import SeaOptions
from spectral_edit.core.statistics import FitError
from spectral_edit.editors.sea_fit import SpectralFitter, fit_from_arrays
from spectral_edit.experiments.pipeline import fit_editor
from spectral_edit.hf.layers import LayerNotFoundError, find_decoder_layers, parse_layers
from tests.failures.refusals import assert_nothing_written, assert_ok, assert_refused, run_cli
from tests.tiny_models import make_tiny_model, make_tiny_tokenizer

N, LAYERS, D = 12, 2, 8

DEMOS = [
    {"prompt": "Q: Is the sky blue? A:", "positive": "yes, it is", "negative": "no, never"},
    {"prompt": "Q: Is ice cold? A:", "positive": "yes, always", "negative": "it is hot"},
    {"prompt": "Q: Do fish swim? A:", "positive": "they do", "negative": "fish fly"},
    {"prompt": "Q: Is two even? A:", "positive": "true", "negative": "false, odd"},
    {"prompt": "Q: Does fire burn? A:", "positive": "it burns", "negative": "it freezes"},
    {"prompt": "Q: Is the sun a star? A:", "positive": "a star", "negative": "a planet"},
    {"prompt": "Q: Can birds fly? A:", "positive": "most can", "negative": "none can"},
    {"prompt": "Q: Is water wet? A:", "positive": "yes", "negative": "it is dry"},
]
"""Invented demonstrations, varied enough for a proper fit on the tiny models."""


def _arrays(n: int = N, layers: int = LAYERS, d: int = D, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, layers, d, generator=gen) for _ in range(3)]


def _factors_finite(editor) -> bool:
    return all(bool(torch.isfinite(f).all()) for f in editor.pos_factors + editor.neg_factors)


@pytest.fixture()
def demos_file(tmp_path: Path) -> Path:
    path = tmp_path / "demos.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in DEMOS), encoding="utf-8")
    return path


def _fit(model_dir: Path, demos: Path, out: Path, *extra: str):
    """``sea fit`` on the tiny model with the prompt's last token as neutral (no generation)."""
    args = ["fit", "--model", model_dir, "--demos", demos, "--out", out, "--neutral", "prompt"]
    args += ["--layers", "all"]  # the tiny models have 2-3 layers; a later --layers wins
    return run_cli([*args, *extra])


# ------------------------------------------------------------------ non-finite activations
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("which", [0, 1, 2])
def test_non_finite_activations_are_refused_naming_set_layer_and_row(value, which):
    arrays = _arrays()
    arrays[which][4, 1, 3] = value
    name = ("neutral", "positive", "negative")[which]
    with pytest.raises(FitError) as caught:
        fit_from_arrays(*arrays, layers=[5, 7], num_layers=8)
    message = str(caught.value)
    assert f"{name} activations are not finite" in message
    assert "at layer(s) 7, in 1 of" in message
    assert "demonstration #5" in message and "--dtype float32" in message


def test_a_refused_batch_adds_nothing_to_the_statistics():
    h, hp, hn = _arrays()
    fitter = SpectralFitter([0, 1], D, 2)
    fitter.update(h[:6], hp[:6], hn[:6])
    bad = h[6:].clone()
    bad[0, 0, 0] = math.nan
    with pytest.raises(FitError, match="demonstration #7"):
        fitter.update(bad, hp[6:], hn[6:])
    assert fitter.count == 6 and bool(torch.isfinite(fitter.cross_pos).all())


def _overflowing_llama(layer: int):
    """A tiny Llama whose decoder layer ``layer`` outputs NaN (its MLP weights are inf)."""
    model = make_tiny_model("llama")
    with torch.no_grad():
        model.model.layers[layer].mlp.down_proj.weight.fill_(math.inf)
    return model


def test_non_finite_activations_from_the_model_name_the_layer():
    model, tokenizer = _overflowing_llama(1), make_tiny_tokenizer()
    from spectral_edit.demos.format import Demonstration

    demos = [Demonstration(**d) for d in DEMOS]
    options = SeaOptions(layers="0,1", neutral="prompt")
    with pytest.raises(FitError, match=r"not finite \(NaN or Inf\) at layer\(s\) 1,? "):
        fit_editor(model, tokenizer, demos, options)
    # the layer below the overflow still fits
    editor = fit_editor(model, tokenizer, demos, options.replace(layers="0"))
    assert editor.layers == (0,) and _factors_finite(editor)


def test_cli_refuses_a_model_that_overflows(tmp_path, demos_file):
    folder = tmp_path / "overflowing"
    _overflowing_llama(1).save_pretrained(folder)
    make_tiny_tokenizer().save_pretrained(folder)
    out = tmp_path / "editor.safetensors"
    result = _fit(folder, demos_file, out, "--layers", "0,1")
    assert_refused(result, "not finite", "layer(s) 1", "--dtype float32")
    assert_nothing_written(out)


# ------------------------------------------------------------------- zero, shapes, counts
@pytest.mark.parametrize(
    ("zeroed", "named"),
    [((0,), "neutral"), ((1,), "positive"), ((0, 1, 2), "neutral")],
)
def test_all_zero_activations_are_refused_naming_the_layer(zeroed, named):
    arrays = _arrays()
    for which in zeroed:
        arrays[which] = torch.zeros_like(arrays[which])
    with pytest.raises(FitError) as caught:
        fit_from_arrays(*arrays, layers=[3, 4], num_layers=5)
    message = str(caught.value)
    assert "zero at layer 3" in message and "4" in message
    assert f"the {named}" in message and "all zero" in message


def test_one_all_zero_layer_is_named_alone():
    h, hp, hn = _arrays()
    hp[:, 1] = 0
    with pytest.raises(FitError, match=r"zero at layer 6 \(Ω\+\): the positive activations"):
        fit_from_arrays(h, hp, hn, layers=[5, 6], num_layers=7)


@pytest.mark.parametrize(
    ("which", "shape"),
    [(1, (N - 1, LAYERS, D)), (2, (N, LAYERS, D - 1)), (1, (N, LAYERS + 1, D)), (2, (N, D))],
)
def test_mismatched_shapes_are_refused_with_both_shapes(which, shape):
    arrays = _arrays()
    arrays[which] = torch.randn(*shape)
    with pytest.raises(FitError) as caught:
        fit_from_arrays(*arrays)
    assert str(tuple(shape)) in str(caught.value)


def test_empty_and_misnamed_inputs_are_refused():
    h, hp, hn = _arrays()
    with pytest.raises(FitError, match="no demonstrations"):
        fit_from_arrays(h[:0], hp[:0], hn[:0])
    with pytest.raises(FitError, match="1 layer ids for arrays with 2 layers"):
        fit_from_arrays(h, hp, hn, layers=[0])
    for layers in ([-1, 0], [1, 1]):
        with pytest.raises(FitError, match="distinct model layer indices >= 0"):
            fit_from_arrays(h, hp, hn, layers=layers)
    with pytest.raises(FitError, match="must be floating point"):
        fit_from_arrays(h.long(), hp, hn)


# ------------------------------------------------------------------------------- ratios
BAD_RATIOS = [0.0, -0.5, 1.5, math.nan]


@pytest.mark.parametrize("ratio", BAD_RATIOS)
@pytest.mark.parametrize("name", ["pos_ratio", "neg_ratio"])
def test_bad_ratios_are_refused_by_options_and_fitter(name, ratio):
    with pytest.raises(ValueError, match=rf"{name} must be in \(0, 1\]"):
        SeaOptions(**{name: ratio})
    with pytest.raises(FitError, match=rf"{name} must be in \(0, 1\]"):
        fit_from_arrays(*_arrays(), **{name: ratio})


@pytest.mark.parametrize("ratio", ["0", "1.5", "nan", "-1"])
def test_cli_refuses_bad_ratios_before_loading(tmp_path, demos_file, ratio):
    out = tmp_path / "editor.safetensors"
    out.write_bytes(b"earlier editor")
    result = _fit(tmp_path / "no-such-model", demos_file, out, "--neg-ratio", ratio)
    assert_refused(result, "--neg-ratio must be in (0, 1]")
    assert_nothing_written(out, before=b"earlier editor")


# -------------------------------------------------------------------------------- ranks
@pytest.mark.parametrize("rank", [0, -1, 2.5, True])
def test_ranks_below_one_or_fractional_are_refused(rank):
    with pytest.raises(ValueError, match="pos_rank must be an integer >= 1"):
        SeaOptions(pos_rank=rank)
    with pytest.raises(FitError, match="pos_rank must be an integer >= 1"):
        fit_from_arrays(*_arrays(), pos_rank=rank)


def test_ranks_beyond_the_hidden_size_are_refused():
    with pytest.raises(FitError, match=rf"neg_rank must be in 1..{D} \(the hidden size"):
        fit_from_arrays(*_arrays(), neg_rank=D + 1)


def test_ranks_beyond_n_give_a_finite_editor_and_a_warning():
    """Documented: ranks above what N demonstrations span are allowed (the extra
    directions come from the null space) but warned about."""
    h, hp, hn = _arrays(n=4, d=D)
    with pytest.warns(UserWarning, match="reach 4, every direction 4 demonstrations span"):
        editor = fit_from_arrays(h, hp, hn, pos_rank=6, neg_rank=2)
    assert editor.ranks[0] == (6, 2) and _factors_finite(editor)


def test_a_full_fit_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        editor = fit_from_arrays(*_arrays(n=200), pos_ratio=0.6, neg_ratio=0.6)
    assert _factors_finite(editor)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--pos-rank", "0", "--pos-rank must be an integer >= 1"),
        ("--neg-rank", "99", "neg_rank must be in 1..32 (the hidden size"),
    ],
)
def test_cli_refuses_bad_ranks(tiny_model_dir, tmp_path, demos_file, option, value, message):
    out = tmp_path / "editor.safetensors"
    assert_refused(_fit(tiny_model_dir, demos_file, out, option, value), message)
    assert_nothing_written(out)


# -------------------------------------------------------------------------- layer specs
@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("last-99", "L must be in 1..3"),
        ("last-0", "L must be in 1..3"),
        ("last-x", "expected last-L"),
        ("5,99", "layer 5 out of range"),
        ("1,99", "layer 99 out of range"),
        ("abc", "use 'all', 'last-L' or a comma list"),
        ("-4", "layer -4 out of range"),
        (",", "no layers selected"),
    ],
)
def test_bad_layer_specs_are_refused(tiny_model_dir, tmp_path, demos_file, spec, fragment):
    with pytest.raises(ValueError, match=f"bad layer spec '{spec}'"):
        parse_layers(spec, 3)
    out = tmp_path / "editor.safetensors"
    assert_refused(_fit(tiny_model_dir, demos_file, out, f"--layers={spec}"), spec, fragment)
    assert_nothing_written(out)


def test_negative_layer_indices_count_from_the_end(tiny_model_dir, tmp_path, demos_file):
    assert parse_layers("-1,-3", 3) == [0, 2]
    out = tmp_path / "editor.safetensors"
    assert_ok(_fit(tiny_model_dir, demos_file, out, "--layers=-1"))
    from spectral_edit.editors.sea import SpectralEditor

    editor = SpectralEditor.load(out)
    assert editor.layers == (2,) and _factors_finite(editor)


# ------------------------------------------------------------ layers that cannot be found
def _hidden_layers_model():
    """A tiny Llama whose config claims 7 layers: no ModuleList of that length exists."""
    model = make_tiny_model("llama")
    model.config.num_hidden_layers = 7
    return model


def test_unfindable_layers_say_how_to_pass_the_override():
    model = _hidden_layers_model()
    with pytest.raises(LayerNotFoundError) as caught:
        find_decoder_layers(model)
    message = str(caught.value)
    assert "with 7 entries" in message and "'model.layers' (2)" in message
    assert "layer_path" in message and "--layer-path" in message
    assert len(find_decoder_layers(model, "model.layers")) == 2  # the override works
    with pytest.raises(LayerNotFoundError, match="'model.nope' does not exist.*'model.layers'"):
        find_decoder_layers(model, "model.nope")
    with pytest.raises(LayerNotFoundError, match="'model.embed_tokens' is a Embedding"):
        find_decoder_layers(model, "model.embed_tokens")


def test_cli_refuses_unfindable_layers(monkeypatch, tmp_path, demos_file):
    from spectral_edit.cli import fit as fit_command

    monkeypatch.setattr(
        fit_command, "load", lambda *_: (_hidden_layers_model(), make_tiny_tokenizer())
    )
    out = tmp_path / "editor.safetensors"
    result = _fit(tmp_path / "ignored", demos_file, out)
    assert_refused(result, "no decoder-layer ModuleList", "--layer-path", "'model.layers'")
    assert_nothing_written(out)


def test_cli_refuses_a_wrong_layer_path(tiny_model_dir, tmp_path, demos_file):
    out = tmp_path / "editor.safetensors"
    result = _fit(tiny_model_dir, demos_file, out, "--layer-path", "model.nope")
    assert_refused(result, "layer path 'model.nope' does not exist", "'model.layers' (3)")
    assert_nothing_written(out)


# -------------------------------------------------------------------------- feature scales
def test_feature_scales_of_the_wrong_count_are_refused():
    with pytest.raises(FitError, match=r"got 1 for the 2 fitted layers \(0, 1\); pass 2"):
        fit_from_arrays(*_arrays(), feature="tanh", feature_scales=[1.0])
    with pytest.raises(FitError, match="feature_scales must be finite and > 0"):
        fit_from_arrays(*_arrays(), feature="tanh", feature_scales=[1.0, math.nan])


def test_feature_scales_count_is_checked_before_the_capture(monkeypatch):
    import spectral_edit.experiments.pipeline as pipeline

    def no_capture(*args, **kwargs):
        raise AssertionError("captured before checking the options")

    monkeypatch.setattr(pipeline, "capture_demos", no_capture)
    model = make_tiny_model("mistral")  # 3 layers
    options = SeaOptions(layers="all", feature="tanh", feature_scales=(1.0, 2.0))
    with pytest.raises(FitError, match="got 2 for the 3 fitted layers"):
        fit_editor(model, make_tiny_tokenizer(), [], options)
    with pytest.raises(FitError, match="pos_rank must be in 1..32"):
        fit_editor(model, make_tiny_tokenizer(), [], SeaOptions(layers="all", pos_rank=33))


@pytest.mark.parametrize("scales", ["1,2", "1,2,3,4"])
def test_cli_refuses_feature_scales_of_the_wrong_count(
    tiny_model_dir, tmp_path, demos_file, scales
):
    out = tmp_path / "editor.safetensors"
    result = _fit(
        tiny_model_dir, demos_file, out, "--layers", "all", "--feature", "tanh",
        "--feature-scales", scales,
    )  # fmt: skip
    assert_refused(result, "for the 3 fitted layers (0, 1, 2)", "--feature-scales")
    assert_nothing_written(out)
