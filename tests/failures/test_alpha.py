"""Failure catalogue, strength α at the API level: NaN, ±Inf and strengths so large the
edit overflows (``|α| > MAX_ALPHA``) are refused by :class:`SeaOptions`, by every editor's
constructor (so by ``with_options(alpha=...)`` and by the fit), and when an editor file
holding such an α is loaded (an :class:`EditorFileError` naming the file). At the bound,
the edited model's output stays finite.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from spectral_edit.core.options import MAX_ALPHA, SeaOptions, check_alpha
from spectral_edit.editors.baselines import MeanDifferenceEditor, PCAVectorEditor
from spectral_edit.editors.baselines.iti import ITIEditor
from spectral_edit.editors.baselines.lora import LoRAEditor
from spectral_edit.editors.file_format import EditorFileError, write_editor_file
from spectral_edit.editors.registry import load_editor
from spectral_edit.editors.sea_fit import fit_from_arrays
from tests.failures.refusals import assert_refused, run_cli
from tests.tiny_models import make_tiny_model

BAD = [math.nan, math.inf, -math.inf, 1e308, -2 * MAX_ALPHA, MAX_ALPHA * (1 + 1e-9)]
GOOD = [0.0, -3.0, 1, 40.0, MAX_ALPHA, -MAX_ALPHA]


def _arrays(n=20, layers=2, d=32):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(n, layers, d, generator=gen) for _ in range(3)]


def _editors() -> list:
    """One editor of every kind, for a 2-layer model of hidden size 32 (LEACE when the
    baselines extra is installed)."""
    neutral, positive, negative = _arrays()
    common = {"layers": [0, 1], "num_layers": 2}
    editors = [
        fit_from_arrays(neutral, positive, negative, pos_ratio=0.9, neg_ratio=0.9, **common),
        MeanDifferenceEditor.fit(positive, negative, **common),
        PCAVectorEditor.fit(positive, negative, **common),
        ITIEditor(
            heads=((0, 1),),
            directions=torch.nn.functional.normalize(torch.ones(1, 8), dim=1),
            sigmas=torch.ones(1),
            num_heads=4,
            head_dim=8,
            hidden_size=32,
            num_layers=2,
        ),
        LoRAEditor(
            modules=("model.layers.0.self_attn.q_proj",),
            lora_A=(torch.zeros(2, 32),),
            lora_B=(torch.zeros(32, 2),),
            scalings=(1.0,),
            hidden_size=32,
            num_layers=2,
        ),
    ]
    try:
        from spectral_edit.editors.baselines import LeaceEditor

        editors.append(LeaceEditor.fit(positive, negative, **common))
    except ImportError:
        pass
    return editors


EDITORS = _editors()
IDS = [type(e).__name__ for e in EDITORS]


@pytest.mark.parametrize("alpha", BAD)
def test_check_alpha_and_options_refuse(alpha):
    for check in (check_alpha, lambda a: SeaOptions(alpha=a)):
        with pytest.raises(ValueError, match=r"alpha must be a finite number with \|alpha\|"):
            check(alpha)


@pytest.mark.parametrize("alpha", ["x", None, True])
def test_check_alpha_refuses_non_numbers(alpha):
    with pytest.raises(ValueError, match="alpha must be"):
        check_alpha(alpha)


@pytest.mark.parametrize("alpha", GOOD)
def test_finite_strengths_within_the_bound_pass(alpha):
    assert check_alpha(alpha) == float(alpha)
    assert SeaOptions(alpha=alpha).alpha == float(alpha)
    for editor in EDITORS:
        assert editor.with_options(alpha=alpha).alpha == float(alpha)


@pytest.mark.parametrize("editor", EDITORS, ids=IDS)
@pytest.mark.parametrize("alpha", BAD)
def test_every_editor_refuses_a_bad_alpha(editor, alpha):
    with pytest.raises(ValueError, match="alpha must be a finite number"):
        editor.with_options(alpha=alpha)
    with pytest.raises(ValueError, match="alpha must be a finite number"):
        dataclasses.replace(editor, alpha=alpha)
    assert math.isfinite(editor.alpha)  # the original is untouched


@pytest.mark.parametrize("alpha", [math.nan, 1e308])
def test_fitting_with_a_bad_alpha_is_refused(alpha):
    neutral, positive, negative = _arrays()
    with pytest.raises(ValueError, match="alpha must be a finite number"):
        fit_from_arrays(neutral, positive, negative, pos_ratio=0.9, neg_ratio=0.9, alpha=alpha)
    with pytest.raises(ValueError, match="alpha must be a finite number"):
        MeanDifferenceEditor.fit(positive, negative, layers=[0, 1], num_layers=2, alpha=alpha)


def _with_alpha_in_header(editor, path, alpha: float):
    """``editor`` written to ``path`` through the one file writer, its header's α set to
    ``alpha`` (a crafted file: the writer itself is valid)."""
    tensors, header = editor.FORMAT.encode(editor)
    header["alpha"] = alpha
    return write_editor_file(path, tensors, header)


@pytest.mark.parametrize("editor", EDITORS, ids=IDS)
@pytest.mark.parametrize("alpha", [1e308, math.inf])
def test_loading_a_file_with_a_bad_alpha_names_the_file(editor, alpha, tmp_path):
    path = tmp_path / "crafted.safetensors"
    try:
        _with_alpha_in_header(editor, path, alpha)
    except ValueError:
        pytest.skip("the header writer refuses a non-finite value itself")
    # the reader (non-finite numbers) or the editor's constructor (beyond the bound) refuses
    refusal = r"crafted\.safetensors.*'?alpha'? (must be a finite|is not finite)"
    with pytest.raises(EditorFileError, match=refusal):
        load_editor(path)
    with pytest.raises(EditorFileError, match=refusal):
        type(editor).load(path)
    assert_refused(run_cli(["info", path]), "crafted", "alpha")  # rich may wrap the path


def test_the_bound_keeps_the_edited_model_finite():
    """At ``α = ±MAX_ALPHA`` the tiny model's logits under each site editor stay finite in
    float32 (so the bound is not itself an overflow)."""
    model = make_tiny_model("llama")
    ids = torch.tensor([[1, 8, 21, 40, 7, 9]])
    for editor in EDITORS[:3]:
        for alpha in (MAX_ALPHA, -MAX_ALPHA):
            with torch.no_grad(), editor.with_options(alpha=alpha).apply(model):
                logits = model(ids).logits
            assert bool(torch.isfinite(logits).all()), (type(editor).__name__, alpha)
