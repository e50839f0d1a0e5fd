"""Any editor file loads by its header's format; the CLI applies and describes baselines."""

import pytest
import torch
from typer.testing import CliRunner

from spectral_edit import fit_from_arrays
from spectral_edit.cli.app import app
from spectral_edit.editors.baselines import LeaceEditor, MeanDifferenceEditor, PCAVectorEditor
from spectral_edit.editors.file_format import EditorFileError
from spectral_edit.editors.registry import editor_classes, load_editor

from .tiny_models import make_tiny_model


def _arrays(d=32, layers=2, n=20):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(n, layers, d, generator=gen) for _ in range(3)]


def _editors(num_layers=2):
    neutral, positive, negative = _arrays()
    common = {"layers": [0, 1], "num_layers": num_layers}
    return [
        fit_from_arrays(neutral, positive, negative, pos_rank=2, neg_rank=2, **common),
        MeanDifferenceEditor.fit(positive, negative, alpha=0.5, **common),
        PCAVectorEditor.fit(positive, negative, **common),
        LeaceEditor.fit(positive, negative, **common),
    ]


def test_load_editor_dispatches_on_format(tmp_path):
    model = make_tiny_model("llama")
    ids = torch.tensor([[3, 8, 21, 40, 7]])
    assert len(editor_classes()) == 7  # SEA, five baselines, and compositions
    for i, editor in enumerate(_editors()):
        path = editor.save(tmp_path / f"e{i}.safetensors")
        loaded = load_editor(path, model)
        assert type(loaded) is type(editor)
        with editor.apply(model):
            expected = model(ids).logits
        with loaded.apply(model):
            torch.testing.assert_close(model(ids).logits, expected, rtol=0, atol=0)


def test_load_editor_refuses_non_editors(tmp_path):
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(plain))
    with pytest.raises(EditorFileError, match="plain.safetensors: no spectral_edit metadata"):
        load_editor(plain)
    with pytest.raises(EditorFileError, match="no such editor file"):
        load_editor(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(EditorFileError, match="not a readable safetensors"):
        load_editor(garbage)


def test_cli_info_and_eval_with_a_baseline_editor(tiny_model_dir, tmp_path):
    from pathlib import Path

    fixtures = Path(__file__).parent / "fixtures" / "data"
    _, positive, negative = _arrays(d=32, layers=2)
    path = MeanDifferenceEditor.fit(positive, negative, layers=[0, 1], num_layers=3).save(
        tmp_path / "md.safetensors"
    )
    runner = CliRunner()
    info = runner.invoke(app, ["info", str(path)])
    assert info.exit_code == 0, info.output
    assert "MeanDifferenceEditor" in info.output and "n_demonstrations" in info.output
    result = runner.invoke(
        app,
        [
            "eval",
            "truthfulqa",
            "--model",
            str(tiny_model_dir),
            "--editor",
            str(path),
            "--mc-file",
            "mc_task.json",
            "--data-dir",
            str(fixtures),
            "--limit",
            "1",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 0, result.output


def test_every_editor_class_is_an_editor_with_its_own_format(tmp_path):
    from spectral_edit.editors.base import Editor
    from spectral_edit.editors.registry import EDITOR_CLASSES

    names = [cls.FORMAT.name for cls in EDITOR_CLASSES]
    assert sorted(names) == sorted(editor_classes()) and len(set(names)) == len(names)
    for editor in _editors():
        assert isinstance(editor, Editor)
        assert isinstance(editor.with_options(alpha=0.25), type(editor))
    assert not isinstance(torch.zeros(1), Editor)


def test_header_values_read_back_as_their_field_types(tmp_path):
    editor = _editors()[2]  # PCA: per-layer tensors and a per-layer float tuple
    loaded = PCAVectorEditor.load(editor.save(tmp_path / "pca.safetensors"))
    assert loaded.layers == editor.layers and isinstance(loaded.layers, tuple)
    assert loaded.scales == editor.scales and isinstance(loaded.scales, tuple)
    assert loaded.site == "residual" and loaded.metadata == editor.metadata
