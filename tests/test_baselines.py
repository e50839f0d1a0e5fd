"""Baselines on tiny models: planted direction, α = 0 identity, hook effect, save/load."""

import pytest
import torch

from spectral_edit import EditorFileError, SpectralEditor, fit_from_arrays
from spectral_edit.editors.baselines import MeanDifferenceEditor
from spectral_edit.hf.layers import find_decoder_layers

from .tiny_models import make_tiny_model, make_tiny_tokenizer


def _planted(n=200, d=32, layers=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(layers, d, generator=gen), dim=-1)
    base = torch.randn(n, layers, d, generator=gen)
    noise = lambda: 0.01 * torch.randn(n, layers, d, generator=gen)  # noqa: E731
    return base + 2 * direction + noise(), base - 2 * direction + noise(), direction


def test_mean_difference_recovers_planted_direction():
    positive, negative, direction = _planted()
    editor = MeanDifferenceEditor.fit(positive, negative, layers=[0, 1], num_layers=2)
    for index, vector in enumerate(editor.vectors):
        torch.testing.assert_close(vector, 4 * direction[index], atol=1e-2, rtol=0)
    assert editor.metadata["n_demonstrations"] == 200


def test_mean_difference_hooks_alpha_and_round_trip(tmp_path):
    model = make_tiny_model("llama")
    tokenizer = make_tiny_tokenizer()
    ids = torch.tensor([tokenizer("the cat sat on the mat")["input_ids"]])
    positive, negative, _ = _planted(d=32, layers=2)
    editor = MeanDifferenceEditor.fit(positive, negative, layers=[0, 1], num_layers=2, alpha=0.5)
    before = model(ids).logits
    with editor.with_options(alpha=0.0).apply(model):
        assert torch.equal(model(ids).logits, before)
    seen = {}
    block = find_decoder_layers(model)[1]
    raw = block.register_forward_hook(lambda m, a, out: seen.update(raw=out.clone()))
    with editor.apply(model):
        steered = block.register_forward_hook(lambda m, a, out: seen.update(steered=out.clone()))
        edited = model(ids).logits
        steered.remove()
    raw.remove()
    torch.testing.assert_close(
        seen["steered"] - seen["raw"],
        0.5 * editor.vectors[1].expand_as(seen["raw"]),
        atol=1e-5,
        rtol=0,
    )
    assert not torch.allclose(edited, before, atol=1e-3)
    assert torch.equal(model(ids).logits, before)
    loaded = MeanDifferenceEditor.load(editor.save(tmp_path / "md.safetensors"), model)
    with loaded.apply(model):
        assert torch.equal(model(ids).logits, edited)


def test_editor_kinds_are_not_confused(tmp_path):
    positive, negative, _ = _planted()
    steering = MeanDifferenceEditor.fit(positive, negative, layers=[0, 1], num_layers=2)
    sea = fit_from_arrays(positive, positive, negative, pos_rank=2, neg_rank=2)
    with pytest.raises(EditorFileError, match="is not 'spectral-edit/sea'"):
        SpectralEditor.load(steering.save(tmp_path / "md.safetensors"))
    with pytest.raises(EditorFileError, match="is not 'spectral-edit/mean-diff'"):
        MeanDifferenceEditor.load(sea.save(tmp_path / "sea.safetensors"))
    with pytest.raises(EditorFileError, match="layers"):
        MeanDifferenceEditor.load(tmp_path / "md.safetensors", make_tiny_model("mistral"))


def test_mean_difference_refuses_bad_inputs():
    positive, negative, _ = _planted(n=10)
    with pytest.raises(ValueError, match="duplicate layers"):
        MeanDifferenceEditor.fit(positive, negative, layers=[1, 1], num_layers=2)
    with pytest.raises(ValueError, match="at least one positive"):
        MeanDifferenceEditor.fit(positive[:0], negative[:0], layers=[0, 1], num_layers=2)
    with pytest.raises(ValueError, match="2 layer ids for arrays with 1 layers"):
        MeanDifferenceEditor.fit(positive[:, :1], negative[:, :1], layers=[0, 1], num_layers=2)
    with pytest.raises(ValueError, match="one shape"):
        MeanDifferenceEditor.fit(positive, negative[:, :, :8], layers=[0, 1], num_layers=2)
