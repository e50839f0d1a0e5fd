"""PCA control vectors and LEACE erasure on planted data and tiny models: the fitted
direction / erasure properties, α = 0 identity, the hook's exact effect, save/load."""

import re

import pytest
import torch
from concept_erasure import LeaceFitter

from spectral_edit.editors.baselines import LeaceEditor, MeanDifferenceEditor, PCAVectorEditor
from spectral_edit.editors.file_format import EditorFileError, read_editor_file, write_editor_file
from spectral_edit.hf.hooks import hidden_of
from spectral_edit.hf.layers import find_decoder_layers

from .tiny_models import make_tiny_model, make_tiny_tokenizer

D = 32  # width of the tiny llama and gpt2


def _unit(gen, *shape):
    return torch.nn.functional.normalize(
        torch.randn(*shape, generator=gen, dtype=torch.float64), dim=-1
    )


def _pca_pairs(coefficients, d=D, layers=2, noise=0.05, seed=0):
    """Pairs whose differences are ``c_i u_l + noise``: ``(N, L, d)`` twice and ``u (L, d)``."""
    gen = torch.Generator().manual_seed(seed)
    direction = _unit(gen, layers, d)
    n = len(coefficients)
    base = torch.randn(n, layers, d, generator=gen, dtype=torch.float64)
    shift = coefficients.reshape(n, 1, 1) * direction
    jitter = noise * torch.randn(n, layers, d, generator=gen, dtype=torch.float64)
    return base + shift + jitter, base, direction


def _spread(n=300, mean=1.5, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return mean + torch.randn(n, generator=gen, dtype=torch.float64)


def _ids():
    return torch.tensor([make_tiny_tokenizer()("the cat sat on the mat")["input_ids"]])


def _layer_outputs(model, editor, ids, layer):
    """(raw, edited) outputs of decoder block ``layer`` and the edited logits."""
    seen = {}
    block = find_decoder_layers(model)[layer]
    raw = block.register_forward_hook(lambda m, a, out: seen.update(raw=hidden_of(out).clone()))
    try:
        with editor.apply(model):
            after = block.register_forward_hook(
                lambda m, a, out: seen.update(edited=hidden_of(out).clone())
            )
            try:
                logits = model(ids).logits
            finally:
                after.remove()
    finally:
        raw.remove()
    return seen["raw"], seen["edited"], logits


# ------------------------------------------------------------------------------ PCA
def test_pca_recovers_planted_direction_sign_and_scale():
    positive, negative, direction = _pca_pairs(_spread())
    editor = PCAVectorEditor.fit(positive, negative, layers=[0, 1], num_layers=2)
    for index in range(2):
        fitted = editor.directions[index].double()
        assert torch.dot(fitted, direction[index]) > 0.99  # aligned and correctly signed
        projections = (positive[:, index] - negative[:, index]) @ fitted
        assert editor.scales[index] == pytest.approx(float(projections.mean()), rel=1e-5)
        assert editor.scales[index] == pytest.approx(1.5, abs=0.2)
        assert editor.metadata["explained_variance"][index] > 0.9
    assert editor.metadata["n_demonstrations"] == 300

    swapped = PCAVectorEditor.fit(negative, positive, layers=[0, 1], num_layers=2)
    for index in range(2):
        torch.testing.assert_close(swapped.directions[index], -editor.directions[index])
        assert swapped.scales[index] == pytest.approx(editor.scales[index], rel=1e-6)


def test_pca_sign_follows_the_majority_of_pairs_not_the_mean():
    # 8 pairs slightly positive along u, 2 far negative: the mean projection is negative.
    coefficients = torch.tensor([1.0, 1.2, 0.8, 1.1, 0.9, 1.3, 0.7, 1.0, -20.0, -22.0])
    positive, negative, direction = _pca_pairs(coefficients.double(), noise=0.01)
    editor = PCAVectorEditor.fit(positive, negative, layers=[0, 1], num_layers=2)
    for index in range(2):
        assert torch.dot(editor.directions[index].double(), direction[index]) > 0.99
        assert editor.scales[index] < -2.0  # the mean difference's component along u


def test_pca_centres_the_differences_like_repeng():
    """The first component is where the differences *vary*, not their (larger) mean."""
    gen = torch.Generator().manual_seed(3)
    mean_dir, varying = torch.linalg.qr(torch.randn(D, 2, generator=gen, dtype=torch.float64))[0].T
    coefficients = _spread(n=200, mean=0.5)
    negative = torch.randn(200, 1, D, generator=gen, dtype=torch.float64)
    positive = negative + (5.0 * mean_dir + coefficients[:, None] * varying)[:, None]
    editor = PCAVectorEditor.fit(positive, negative, layers=[0], num_layers=1)
    assert torch.dot(editor.directions[0].double(), varying) > 0.999
    assert editor.scales[0] == pytest.approx(float(coefficients.mean()), rel=1e-5)


def test_pca_refuses_degenerate_or_unpaired_inputs():
    positive, negative, _ = _pca_pairs(_spread(n=5))
    with pytest.raises(ValueError, match="as many positives as negatives"):
        PCAVectorEditor.fit(positive, negative[:4], layers=[0, 1], num_layers=2)
    with pytest.raises(ValueError, match="at least 2 pairs"):
        PCAVectorEditor.fit(positive[:1], negative[:1], layers=[0, 1], num_layers=2)
    constant = negative + torch.linspace(-1, 1, D, dtype=torch.float64)  # all d_i equal
    with pytest.raises(ValueError, match="do not vary"):
        PCAVectorEditor.fit(constant, negative, layers=[0, 1], num_layers=2)
    with pytest.raises(ValueError, match="2 layer ids for arrays with 1 layers"):
        PCAVectorEditor.fit(positive[:, :1], negative[:, :1], layers=[0, 1], num_layers=2)


def test_pca_validates_its_fields():
    unit = torch.nn.functional.normalize(torch.ones(D), dim=0)
    fields = dict(layers=(0,), directions=(unit,), scales=(1.0,), hidden_size=D, num_layers=2)
    PCAVectorEditor(**fields)
    with pytest.raises(ValueError, match="norm 2"):
        PCAVectorEditor(**{**fields, "directions": (2 * unit,)})
    with pytest.raises(ValueError, match=r"shape \(31,\)"):
        PCAVectorEditor(**{**fields, "directions": (unit[:-1],)})
    with pytest.raises(ValueError, match="duplicate layers"):
        PCAVectorEditor(
            **{**fields, "layers": (0, 0), "directions": (unit,) * 2, "scales": (1.0,) * 2}
        )
    with pytest.raises(ValueError, match="out of range"):
        PCAVectorEditor(**{**fields, "layers": (2,)})
    with pytest.raises(ValueError, match="site must be"):
        PCAVectorEditor(**{**fields, "site": "attention"})
    with pytest.raises(ValueError, match="not finite"):
        PCAVectorEditor(**{**fields, "scales": (float("nan"),)})


def test_pca_hook_alpha_and_round_trip(tiny_llama, tmp_path):
    model, _ = tiny_llama
    ids = _ids()
    positive, negative, _ = _pca_pairs(_spread())
    editor = PCAVectorEditor.fit(positive, negative, layers=[0, 1], num_layers=2, alpha=0.5)
    before = model(ids).logits
    with editor.with_options(alpha=0.0).apply(model):
        assert torch.equal(model(ids).logits, before)
    raw, edited, logits = _layer_outputs(model, editor, ids, layer=1)
    shift = 0.5 * editor.scales[1] * editor.directions[1]
    torch.testing.assert_close(edited - raw, shift.expand_as(raw), atol=1e-5, rtol=0)
    assert not torch.allclose(logits, before, atol=1e-3)
    assert torch.equal(model(ids).logits, before)  # hooks removed

    path = editor.save(tmp_path / "pca.safetensors")
    loaded = PCAVectorEditor.load(path, model)
    assert loaded.scales == editor.scales and loaded.metadata == editor.metadata
    with loaded.apply(model):
        assert torch.equal(model(ids).logits, logits)


def test_pca_file_is_validated(tmp_path):
    positive, negative, _ = _pca_pairs(_spread(n=20))
    editor = PCAVectorEditor.fit(positive, negative, layers=[0, 1], num_layers=2)
    path = editor.save(tmp_path / "pca.safetensors")
    named = re.escape(str(path))
    with pytest.raises(EditorFileError, match=f"{named}.*layers"):
        PCAVectorEditor.load(path, make_tiny_model("mistral"))  # 3 layers, not 2
    with pytest.raises(EditorFileError, match="is not 'spectral-edit/pca-vector'"):
        PCAVectorEditor.load(
            MeanDifferenceEditor.fit(positive, negative, layers=[0, 1], num_layers=2).save(
                tmp_path / "md.safetensors"
            )
        )
    header, tensors = read_editor_file(path, "spectral-edit/pca-vector", 1)
    header.pop("content_sha256")
    renamed = tmp_path / "renamed.safetensors"
    write_editor_file(
        renamed,
        {
            "layer.0.direction": tensors["layer.0.direction"],
            "layer.7.direction": tensors["layer.1.direction"],
        },
        header,
    )
    with pytest.raises(EditorFileError, match=f"{re.escape(str(renamed))}.*do not match"):
        PCAVectorEditor.load(renamed)
    stretched = tmp_path / "stretched.safetensors"
    write_editor_file(
        stretched, {**tensors, "layer.1.direction": 3 * tensors["layer.1.direction"]}, header
    )
    with pytest.raises(EditorFileError, match=f"{re.escape(str(stretched))}.*norm 3"):
        PCAVectorEditor.load(stretched)
    corrupted = tmp_path / "corrupted.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x40  # a bit inside the last tensor
    corrupted.write_bytes(bytes(data))
    with pytest.raises(EditorFileError, match=f"{re.escape(str(corrupted))}.*hash mismatch"):
        PCAVectorEditor.load(corrupted)


# ---------------------------------------------------------------------------- LEACE
def _labelled(n_pos=150, n_neg=120, d=D, layers=2, seed=0):
    """Anisotropic activations whose label shifts them along a planted direction."""
    gen = torch.Generator().manual_seed(seed)
    scales = torch.linspace(0.2, 2.0, d, dtype=torch.float64)
    mixing = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))[0]
    direction = _unit(gen, layers, d)

    def sample(n):
        return (torch.randn(n, layers, d, generator=gen, dtype=torch.float64) * scales) @ mixing

    return sample(n_pos) + 1.5 * direction + 0.3, sample(n_neg) - 0.5 * direction + 0.3


def test_leace_erases_the_class_mean_gap_and_nothing_orthogonal():
    positive, negative = _labelled()
    editor = LeaceEditor.fit(positive, negative, layers=[0, 1], num_layers=2)
    assert editor.metadata["erased_rank"] == [1, 1]
    assert (editor.metadata["n_positive"], editor.metadata["n_negative"]) == (150, 120)
    for index, layer in enumerate(editor.layers):
        pos, neg = positive[:, index].float(), negative[:, index].float()
        gap = pos.mean(0) - neg.mean(0)
        assert gap.norm() > 1.0
        erased_pos, erased_neg = editor.edit(pos, layer), editor.edit(neg, layer)
        torch.testing.assert_close(erased_pos.mean(0), erased_neg.mean(0), atol=1e-4, rtol=0)

        change = torch.cat([erased_pos - pos, erased_neg - neg])
        assert change.abs().max() > 0.1
        other = torch.randn(D, generator=torch.Generator().manual_seed(index))
        other -= (other @ gap) / (gap @ gap) * gap  # orthogonal to the label signal
        torch.testing.assert_close(change @ other, torch.zeros(len(change)), atol=1e-4, rtol=0)

        halfway = editor.with_options(alpha=0.5)
        half_gap = halfway.edit(pos, layer).mean(0) - halfway.edit(neg, layer).mean(0)
        torch.testing.assert_close(half_gap, 0.5 * gap, atol=1e-4, rtol=0)

        assert editor.with_options(alpha=0.0).edit(pos, layer) is pos


def test_leace_matches_the_concept_erasure_package():
    positive, negative = _labelled(d=16, layers=1)
    editor = LeaceEditor.fit(positive, negative, layers=[3], num_layers=4)
    x = torch.cat([positive[:, 0], negative[:, 0]])
    z = torch.cat([torch.ones(150), torch.zeros(120)])
    reference = LeaceFitter.fit(x, z, constrain_cov_trace=False).eraser(x)
    torch.testing.assert_close(editor.edit(x.float(), 3), reference.float(), atol=1e-4, rtol=0)
    half = editor.edit(x.to(torch.bfloat16), 3)
    assert half.dtype == torch.bfloat16


def test_leace_validates_its_fields():
    mean, left, right = torch.zeros(D), torch.ones(D, 1), torch.ones(1, D)
    fields = dict(
        layers=(1,),
        means=(mean,),
        proj_left=(left,),
        proj_right=(right,),
        hidden_size=D,
        num_layers=2,
    )
    LeaceEditor(**fields)
    with pytest.raises(ValueError, match="one mean, proj_left and proj_right"):
        LeaceEditor(**{**fields, "means": ()})
    with pytest.raises(ValueError, match=r"layer 1 eraser has .*\(32, 2\)"):
        LeaceEditor(**{**fields, "proj_left": (torch.ones(D, 2),)})
    with pytest.raises(ValueError, match="non-finite"):
        LeaceEditor(**{**fields, "means": (torch.full((D,), float("inf")),)})
    with pytest.raises(ValueError, match="out of range"):
        LeaceEditor(**{**fields, "layers": (2,)})


@pytest.mark.parametrize("tiny_arch", ["llama", "gpt2"])
def test_leace_hook_alpha_and_round_trip(tiny_model, tmp_path):
    ids = _ids()
    positive, negative = _labelled()
    editor = LeaceEditor.fit(positive, negative, layers=[0, 1], num_layers=2)
    before = tiny_model(ids).logits
    with editor.with_options(alpha=0.0).apply(tiny_model):
        assert torch.equal(tiny_model(ids).logits, before)
    raw, edited, logits = _layer_outputs(tiny_model, editor, ids, layer=1)
    mean, left, right = editor.means[1], editor.proj_left[1], editor.proj_right[1]
    expected = raw - (raw - mean) @ (left @ right).T  # the eraser, at every token
    torch.testing.assert_close(edited, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(logits, before, atol=1e-3)
    assert torch.equal(tiny_model(ids).logits, before)

    path = editor.save(tmp_path / "leace.safetensors")
    loaded = LeaceEditor.load(path, tiny_model)
    assert loaded.metadata == editor.metadata
    with loaded.apply(tiny_model):
        assert torch.equal(tiny_model(ids).logits, logits)


def test_leace_file_is_validated(tmp_path):
    positive, negative = _labelled(d=16)
    editor = LeaceEditor.fit(positive, negative, layers=[0, 1], num_layers=2)
    path = editor.save(tmp_path / "leace.safetensors")
    with pytest.raises(EditorFileError, match=f"{re.escape(str(path))}.*hidden size 16"):
        LeaceEditor.load(path, make_tiny_model("gpt2"))
    with pytest.raises(EditorFileError, match="is not 'spectral-edit/pca-vector'"):
        PCAVectorEditor.load(path)
    header, tensors = read_editor_file(path, "spectral-edit/leace", 1)
    header.pop("content_sha256")
    missing = tmp_path / "missing.safetensors"
    write_editor_file(missing, {k: v for k, v in tensors.items() if k != "layer.1.mean"}, header)
    with pytest.raises(EditorFileError, match=f"{re.escape(str(missing))}.*do not match"):
        LeaceEditor.load(missing)
    wide = tmp_path / "wide.safetensors"
    write_editor_file(wide, {**tensors, "layer.0.proj_left": torch.zeros(16, 2)}, header)
    with pytest.raises(EditorFileError, match=f"{re.escape(str(wide))}.*layer 0 eraser"):
        LeaceEditor.load(wide)
