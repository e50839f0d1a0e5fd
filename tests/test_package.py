"""The package's public names: what its docstring and the README import."""

import spectral_edit


def test_top_level_exports_resolve() -> None:
    for name in spectral_edit.__all__:
        assert getattr(spectral_edit, name) is not None, name
    from spectral_edit.editors.registry import load_editor
    from spectral_edit.hf.models import load_model

    assert spectral_edit.load_model is load_model
    assert spectral_edit.load_editor is load_editor


def test_docstring_example_imports() -> None:
    from spectral_edit import capture_demos, fit_from_arrays, load_model, read_demos  # noqa: F401
