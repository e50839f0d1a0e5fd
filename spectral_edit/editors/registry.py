"""Load any editor file (SEA or a baseline) by the format its header names."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from torch import nn

from ..util.identity import shareable_name
from .base import Editor
from .baselines.iti import ITIEditor
from .baselines.leace import LeaceEditor
from .baselines.lora import LoRAEditor
from .baselines.mean_diff import MeanDifferenceEditor
from .baselines.pca_vector import PCAVectorEditor
from .composition import ComposedEditor, compose
from .file_format import EditorFileError, read_format
from .hub import HubReference, download_editor, hub_reference
from .sea import SpectralEditor

EDITOR_CLASSES: tuple[type[Editor], ...] = (
    SpectralEditor,
    ITIEditor,
    LeaceEditor,
    LoRAEditor,
    MeanDifferenceEditor,
    PCAVectorEditor,
    ComposedEditor,
)
"""Every editor class this library can save and load."""


def editor_classes() -> dict[str, type[Editor]]:
    """Format name → editor class, for every editor this library can save."""
    return {cls.FORMAT.name: cls for cls in EDITOR_CLASSES}


def load_editor(
    source: str | os.PathLike[str],
    model: nn.Module | None = None,
    *,
    filename: str | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
) -> Editor:
    """Read, validate and return the editor ``source`` names (checked against ``model`` if
    given), whatever its kind.

    ``source``: a local editor file; an ``hf://owner/repo[@revision]/file.safetensors``
    reference; or, with ``filename`` and/or ``revision``, a Hub repository id
    (``load_editor("owner/repo", filename="editor.safetensors")``). A Hub editor is
    downloaded through the Hugging Face cache (:func:`~.hub.download_editor`; ``token``
    for a private repository, else the logged-in one) and validated exactly as a local
    file; its messages and warnings name its ``hf://`` reference, not the cache path.

    Raises:
        EditorFileError: unreadable, corrupted, of an unknown kind, holding non-finite
            values, or not fitting the model (both shapes named);
            :class:`~.hub.HubEditorError` (one) for a Hub editor that cannot be found or
            downloaded.

    Warns:
        EditorModelWarning: ``model`` fits but is not the model recorded at fit time.
    """
    reference = hub_reference(source, filename, revision)
    if reference is None:
        return _read(Path(source), model)
    path = download_editor(reference, token=token)
    with _named_as(path, reference):
        return _read(path, model)


def load_editors(
    sources: Sequence[str | os.PathLike[str]],
    model: nn.Module | None = None,
    *,
    token: str | bool | None = None,
) -> Editor:
    """The editor applying the editors ``sources`` name, in that order (each read by
    :func:`load_editor`, checked against ``model`` if given): the editor itself for one
    source, else a :class:`~.composition.ComposedEditor` of them (module
    :mod:`.composition`: at a module several of them hook, the first listed acts first).

    Raises:
        EditorFileError: what :func:`load_editor` raises, naming the file; no source; or
            editors fitted for models of different shapes (both files and shapes named).
    """
    if not sources:
        raise EditorFileError("no editor file given to compose")
    editors = [load_editor(source, model, token=token) for source in sources]
    first = editors[0]
    for source, editor in zip(sources[1:], editors[1:], strict=True):
        if (editor.hidden_size, editor.num_layers) != (first.hidden_size, first.num_layers):
            raise EditorFileError(
                f"{source}: editor is for a model of hidden size {editor.hidden_size} with "
                f"{editor.num_layers} layers, but {sources[0]} is for hidden size "
                f"{first.hidden_size} with {first.num_layers} layers: compose editors fitted "
                "on one model"
            )
    if len(editors) == 1:
        return first
    names = [shareable_name(str(source)) for source in sources]
    return compose(editors, sources=names)


def _read(path: str | Path, model: nn.Module | None) -> Editor:
    """The editor in the local file ``path``, by the format its header names."""
    name = read_format(path)
    classes = editor_classes()
    if name not in classes:
        raise EditorFileError(
            f"{path}: unknown editor format {name!r}; known: {sorted(classes)} (written by "
            "another tool or a newer release?)"
        )
    return classes[name].load(path, model)


@contextlib.contextmanager
def _named_as(path: Path, reference: HubReference) -> Iterator[None]:
    """Inside the block, errors and warnings that name the downloaded file ``path`` name
    its Hub ``reference`` instead (a cache path means nothing to the user, and must not be
    recorded), and an error says where the file came from."""
    local = str(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        except EditorFileError as error:
            message = str(error).replace(local, str(reference))
            raise EditorFileError(f"{message} (downloaded from the Hub: {reference.at})") from error
    for warning in caught:
        text = str(warning.message).replace(local, str(reference))
        warnings.warn(text, warning.category, stacklevel=4)
