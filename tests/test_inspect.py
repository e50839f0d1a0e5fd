"""``sea inspect`` and what it reads: the spectrum an editor records at fit time, the
``top-signature-L`` layer choice against a direct signature computation, the activations
file (``sea capture``), the embeddings (t-SNE and the PCA fallback), and the figures and
JSON, whose numbers must be the editor's metadata."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from spectral_edit.cli.app import app
from spectral_edit.core.options import SeaOptions
from spectral_edit.demos.activations import DemoActivations, capture_demos
from spectral_edit.demos.activations_file import (
    ActivationsFileError,
    load_activations,
    save_activations,
)
from spectral_edit.demos.format import Demonstration, write_demos
from spectral_edit.editors.sea import SpectralEditor
from spectral_edit.editors.sea_fit import SPECTRUM_DIRECTIONS, fit_from_arrays
from spectral_edit.experiments import inspection
from spectral_edit.experiments.inspection import (
    RECORDED,
    embed,
    embed_layer,
    inspect_editor,
    pca_2d,
    write_inspection,
)
from spectral_edit.experiments.methods import METHODS, FitContext
from spectral_edit.experiments.pipeline import fit_editor, fit_from_activations
from spectral_edit.hf.layers import capture_layers, parse_layers, top_signature_count
from spectral_edit.util.extras import MissingExtraError

from .tiny_models import make_tiny_model, make_tiny_tokenizer

DEMOS = [
    Demonstration(
        f"q: thing {i} of {i * 7 % 5}\na:", f"yes it is {i} and {i % 3}", f"no never {i * 3}"
    )
    for i in range(20)
]


def _arrays(n=40, layers=5, d=16, seed=0):
    """Random activations whose layers differ in scale and in their positive/negative
    contrast, so that their signatures differ."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([1.0, 3.0, 0.5, 2.0, 1.5])[:layers, None]
    shift = torch.tensor([0.2, 0.1, 2.0, 0.4, 1.0])[:layers, None]
    neutral = torch.randn(n, layers, d, generator=g) * scale
    positive = neutral + torch.randn(n, layers, d, generator=g) * 0.3 + shift
    negative = neutral + torch.randn(n, layers, d, generator=g) * 0.3 - shift
    return DemoActivations(neutral, positive, negative, tuple(range(layers)))


def _direct_signature(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """method.md, literally: X = [h+_1..h+_N, h-_1..h-_N] (d × 2N), one-hot Z (2 × 2N),
    A = X Zᵀ / 2N, the sum of A's singular values."""
    n = positive.shape[0]
    x = torch.cat([positive, negative]).double().T
    z = torch.zeros(2, 2 * n, dtype=torch.float64)
    z[0, :n], z[1, n:] = 1, 1
    return float(torch.linalg.svdvals(x @ z.T / (2 * n)).sum())


@pytest.mark.parametrize("svd", ["dense", "thin"])
def test_the_fit_records_each_directions_energy_share(svd):
    acts = _arrays(n=24, d=16)
    editor = fit_from_arrays(
        acts.neutral, acts.positive, acts.negative, centered=True, svd=svd, pos_ratio=0.9
    )
    for j, entry in enumerate(editor.metadata["layer_stats"]):
        h = acts.neutral[:, j].double()
        h = h - h.mean(0)
        for sign, other in (("pos", acts.positive), ("neg", acts.negative)):
            omega = h.T @ other[:, j].double() / h.shape[0]
            energy = torch.linalg.svdvals(omega).square()
            expected = (energy / energy.sum())[:SPECTRUM_DIRECTIONS]
            shares = torch.tensor(entry[f"{sign}_energy_shares"], dtype=torch.float64)
            m = min(24, 16)  # the thin route's spectrum has min(N, d) directions
            assert len(shares) == min(SPECTRUM_DIRECTIONS, m)
            torch.testing.assert_close(shares, expected[: len(shares)], atol=1e-9, rtol=1e-7)
            kept = float(shares[: entry[f"{sign}_rank"]].sum())
            assert kept == pytest.approx(entry[f"{sign}_energy_kept"], abs=1e-9)


def test_top_signature_fits_the_layers_a_direct_computation_ranks_highest():
    acts = _arrays()
    direct = [_direct_signature(acts.positive[:, j], acts.negative[:, j]) for j in range(5)]
    best = sorted(sorted(range(5), key=lambda j: -direct[j])[:2])
    editor = fit_from_activations(acts, 5, SeaOptions(layers="top-signature-2", centered=True))
    assert editor.layers == tuple(best)
    selection = editor.metadata["layer_selection"]
    assert selection["rule"] == "top-signature-2" and selection["chosen"] == best
    assert selection["candidates"] == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(selection["signatures"], direct, rtol=1e-10)
    # the fitted layers' own signatures are the ones the choice used
    for entry in editor.metadata["layer_stats"]:
        assert entry["signature"] == pytest.approx(
            selection["signatures"][entry["layer"]], rel=1e-12
        )
    # Φ-SEA: signatures in feature space, with each layer's neutral-RMS scale
    tanh = fit_from_activations(
        acts, 5, SeaOptions(layers="top-signature-3", centered=True, feature="tanh")
    )
    rms = acts.neutral.double().square().mean((0, 2)).sqrt()
    phi = [
        _direct_signature(
            torch.tanh(acts.positive[:, j] / rms[j]), torch.tanh(acts.negative[:, j] / rms[j])
        )
        for j in range(5)
    ]
    assert list(tanh.layers) == sorted(sorted(range(5), key=lambda j: -phi[j])[:3])
    np.testing.assert_allclose(tanh.metadata["layer_selection"]["signatures"], phi, rtol=1e-6)
    np.testing.assert_allclose(tanh.feature_scales, [float(rms[j]) for j in tanh.layers], rtol=1e-6)


def test_top_signature_specs_and_fit_editor_on_a_model():
    assert (
        top_signature_count("top-signature-3", 4) == 3 and top_signature_count("last-3", 4) is None
    )
    assert capture_layers("top-signature-2", 4) == [0, 1, 2, 3] and capture_layers("last-2", 4) == [
        2,
        3,
    ]
    for bad in ("top-signature-0", "top-signature-5", "top-signature-x"):
        with pytest.raises(ValueError, match="top-signature-L"):
            top_signature_count(bad, 4)
    with pytest.raises(ValueError, match="resolved when fitting"):
        parse_layers("top-signature-2", 4)
    model, tokenizer = make_tiny_model("mistral"), make_tiny_tokenizer()  # 3 layers
    editor = fit_editor(
        model, tokenizer, DEMOS, SeaOptions(layers="top-signature-1", neutral="prompt")
    )
    acts = capture_demos(model, tokenizer, DEMOS, layers=[0, 1, 2], neutral="prompt")
    direct = [_direct_signature(acts.positive[:, j], acts.negative[:, j]) for j in range(3)]
    assert editor.layers == (direct.index(max(direct)),)
    # the grid's top-signature-8 on a 3-layer model: the top-signature choice of all 3
    ctx = FitContext(model, tokenizer, DEMOS, neutral="prompt")
    setting = next(s for s in METHODS["sea"].grid if s.layers == "top-signature-8")
    assert ctx.layer_spec(setting.layers) == "top-signature-3" and ctx.layers(
        "top-signature-8"
    ) == [0, 1, 2]
    fitted = METHODS["sea"].configure(None, setting, ctx).editor
    assert fitted.metadata["layer_selection"]["rule"] == "top-signature-3"
    assert len(fitted.layers) == 3


def test_activations_files_round_trip_and_refuse_bad_files(tmp_path):
    acts = _arrays(n=6, layers=3, d=8)
    acts = DemoActivations(acts.neutral, acts.positive, acts.negative, (4, 7, 9))
    path = save_activations(acts, tmp_path / "a.safetensors", {"neutral": "prompt", "n": 6})
    loaded, meta = load_activations(path)
    assert loaded.layers == (4, 7, 9) and meta == {"neutral": "prompt", "n": 6}
    for name in ("neutral", "positive", "negative"):
        assert torch.equal(getattr(loaded, name), getattr(acts, name))
    with pytest.raises(ActivationsFileError, match="does not exist"):
        load_activations(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ActivationsFileError, match="junk.safetensors"):
        load_activations(tmp_path / "junk.safetensors")
    editor = fit_from_arrays(acts.neutral, acts.positive, acts.negative, centered=True)
    editor.save(tmp_path / "editor.safetensors")
    with pytest.raises(ActivationsFileError, match="not an activations file"):
        load_activations(tmp_path / "editor.safetensors")


def _editor_and_acts():
    acts = _arrays(n=30)
    editor = fit_from_activations(acts, 5, SeaOptions(layers="top-signature-3", centered=True))
    return editor, acts


def test_inspect_numbers_are_the_editors_metadata(tmp_path):
    editor, acts = _editor_and_acts()
    editor.save(tmp_path / "editor.safetensors")
    loaded = SpectralEditor.load(tmp_path / "editor.safetensors")
    report = inspect_editor(loaded, acts, embedding="pca")
    stats = loaded.metadata["layer_stats"]
    assert [e["layer"] for e in report["layers"]] == list(loaded.layers)
    for entry, recorded in zip(report["layers"], stats, strict=True):
        assert entry == {k: recorded[k] for k in RECORDED}
        assert (entry["pos_rank"], entry["neg_rank"]) == loaded.ranks[entry["layer"]]
    selection = loaded.metadata["layer_selection"]
    assert report["signatures"]["values"] == selection["signatures"]
    assert report["signatures"]["layers"] == selection["candidates"]
    assert report["signatures"]["chosen"] == selection["chosen"] == list(loaded.layers)
    # default embedding layers: the edited layer of highest signature and the last one
    best = max(stats, key=lambda e: e["signature"])["layer"]
    assert [p["layer"] for p in report["embeddings"]] == sorted({best, loaded.layers[-1]})
    written = write_inspection(report, tmp_path / "out")
    for name in ("inspect.json", "signature.png", "spectrum.png", "ranks.png", "embedding.png"):
        assert (tmp_path / "out" / name).stat().st_size > 500, name
    assert set(written) == {"json", "signature", "spectrum", "ranks", "embedding"}
    assert json.loads((tmp_path / "out" / "inspect.json").read_text()) == json.loads(
        json.dumps(report)
    )
    # metadata that contradict the factors are refused, not shown
    bad = dict(loaded.metadata)
    bad["layer_stats"] = [{**stats[0], "pos_rank": stats[0]["pos_rank"] + 1}, *stats[1:]]
    with pytest.raises(inspection.InspectionError, match="inconsistent"):
        inspect_editor(dataclasses.replace(loaded, metadata=bad))


def test_embeddings_tsne_and_the_pca_fallback(monkeypatch):
    editor, acts = _editor_and_acts()
    layer = editor.layers[0]
    tsne = embed_layer(editor, acts, layer, "tsne", max_points=20)
    assert tsne["method"] == "tsne" and tsne["n"] == 20 and tsne["reason"] is None
    assert all(np.isfinite(tsne["points"][s]).all() and np.shape(tsne["points"][s]) == (20, 2)
               for s in ("positive", "negative", "neutral", "edited"))  # fmt: skip
    # PCA: the four sets stacked in order, the edited set being the editor's edit
    pca = embed_layer(editor, acts, layer, "pca", max_points=20)
    j = acts.layers.index(layer)
    rows = [acts.positive[:20, j], acts.negative[:20, j], acts.neutral[:20, j]]
    rows.append(editor.edit(acts.neutral[:20, j], layer))
    expected = pca_2d(torch.cat(rows).double().numpy())
    got = np.concatenate([pca["points"][s] for s in ("positive", "negative", "neutral", "edited")])
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    # PCA itself: centred coordinates whose covariance is diagonal with the top-2 eigenvalues
    x = torch.cat(rows).double().numpy()
    coords = pca_2d(x)
    cov = np.cov(coords.T)
    top = np.sort(np.linalg.eigvalsh(np.cov(x.T)))[::-1][:2]
    np.testing.assert_allclose(coords.mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(np.diag(cov), top, rtol=1e-8)
    assert abs(cov[0, 1]) < 1e-8 * top[0]

    # without scikit-learn: auto falls back to PCA and says why; tsne refuses
    def missing(*args, **kwargs):
        raise MissingExtraError("t-SNE needs scikit-learn")

    monkeypatch.setattr(inspection, "require", missing)
    coords, method, reason = embed(x, "auto")
    assert method == "pca" and "unavailable" in reason
    np.testing.assert_allclose(coords, expected)
    with pytest.raises(MissingExtraError):
        embed(x, "tsne")
    assert embed(x[:5], "auto")[1:] == ("pca", "5 points: too few for t-SNE")
    with pytest.raises(inspection.InspectionError, match="not fitted"):
        embed_layer(editor, acts, next(i for i in range(5) if i not in editor.layers))


def test_capture_and_inspect_cli(tiny_model_dir, tmp_path):
    demos = write_demos(tmp_path / "demos.jsonl", DEMOS)
    editor, acts_file = tmp_path / "editor.safetensors", tmp_path / "acts.safetensors"
    common = ["--model", str(tiny_model_dir), "--demos", str(demos), "--neutral", "prompt"]
    fit = CliRunner().invoke(
        app, ["fit", *common, "--out", str(editor), "--layers", "top-signature-2", "--centered"]
    )
    assert fit.exit_code == 0, fit.output
    captured = CliRunner().invoke(app, ["capture", *common, "--out", str(acts_file)])
    assert captured.exit_code == 0, captured.output
    loaded, meta = load_activations(acts_file)
    assert loaded.layers == (0, 1, 2) and loaded.neutral.shape[0] == len(DEMOS)
    assert meta["neutral"] == "prompt" and meta["demonstrations_file"] == "demos.jsonl"
    out = tmp_path / "inspect"
    fitted = SpectralEditor.load(editor)
    args = ["inspect", str(editor), "--activations", str(acts_file), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--layers", ",".join(map(str, fitted.layers))])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "inspect.json").read_text())
    assert report["signatures"]["values"] == fitted.metadata["layer_selection"]["signatures"]
    assert [e["layer"] for e in report["layers"]] == list(fitted.layers)
    assert [p["layer"] for p in report["embeddings"]] == list(fitted.layers)
    for name in ("signature.png", "spectrum.png", "ranks.png", "embedding.png"):
        assert (out / name).is_file()
    bad = CliRunner().invoke(
        app, ["inspect", str(editor), "--activations", str(demos), "--out", str(out)]
    )
    assert bad.exit_code == 2 and "demos.jsonl" in bad.output
