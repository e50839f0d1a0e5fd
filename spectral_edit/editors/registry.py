"""Load any editor file (SEA or a baseline) by the format its header names."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .base import Editor
from .baselines.iti import ITIEditor
from .baselines.leace import LeaceEditor
from .baselines.lora import LoRAEditor
from .baselines.mean_diff import MeanDifferenceEditor
from .baselines.pca_vector import PCAVectorEditor
from .file_format import EditorFileError, read_format
from .sea import SpectralEditor

EDITOR_CLASSES: tuple[type[Editor], ...] = (
    SpectralEditor,
    ITIEditor,
    LeaceEditor,
    LoRAEditor,
    MeanDifferenceEditor,
    PCAVectorEditor,
)
"""Every editor class this library can save and load."""


def editor_classes() -> dict[str, type[Editor]]:
    """Format name → editor class, for every editor this library can save."""
    return {cls.FORMAT.name: cls for cls in EDITOR_CLASSES}


def load_editor(path: str | Path, model: nn.Module | None = None) -> Editor:
    """Read, validate and return the editor in ``path`` (checked against ``model`` if
    given), whatever its kind.

    Raises:
        EditorFileError: unreadable, corrupted, of an unknown kind, holding non-finite
            values, or not fitting the model (both shapes named).

    Warns:
        EditorModelWarning: ``model`` fits but is not the model recorded at fit time.
    """
    name = read_format(path)
    classes = editor_classes()
    if name not in classes:
        raise EditorFileError(
            f"{path}: unknown editor format {name!r}; known: {sorted(classes)} (written by "
            "another tool or a newer release?)"
        )
    return classes[name].load(path, model)
