"""Load any editor file (SEA or a baseline) by the format its header names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from .file_format import EditorFileError, read_format


def editor_classes() -> dict[str, Any]:
    """Format name → editor class, for every editor this library can save."""
    from .baselines import iti, leace, lora, mean_diff, pca_vector
    from .sea import FORMAT_NAME, SpectralEditor

    return {
        FORMAT_NAME: SpectralEditor,
        iti.FORMAT_NAME: iti.ITIEditor,
        leace.FORMAT_NAME: leace.LeaceEditor,
        lora.FORMAT_NAME: lora.LoRAEditor,
        mean_diff.FORMAT_NAME: mean_diff.MeanDifferenceEditor,
        pca_vector.FORMAT_NAME: pca_vector.PCAVectorEditor,
    }


def load_editor(path: str | Path, model: nn.Module | None = None) -> Any:
    """Read, validate and return the editor in ``path`` (checked against ``model`` if
    given), whatever its kind.

    Raises:
        EditorFileError: unreadable, corrupted, of an unknown kind, or not fitting the model.
    """
    name = read_format(path)
    classes = editor_classes()
    if name not in classes:
        raise EditorFileError(f"{path}: unknown editor format {name!r}; known: {sorted(classes)}")
    return classes[name].load(path, model)
