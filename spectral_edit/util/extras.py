"""Optional dependencies: import a module that belongs to an extra, or say which extra to
install.

The core install (torch, transformers, safetensors, numpy, tqdm) fits, edits and scores;
each other part names its extra in ``pyproject.toml``: ``cli`` (typer, rich), ``plots``
(matplotlib), ``baselines`` (peft, concept-erasure), ``gguf`` (gguf and the embedded
Gemma 3 270M package), ``accelerate`` (``device_map`` dispatch), ``gen`` (sacrebleu,
rouge-score: TruthfulQA generation scoring); ``all`` is all of them. ``lmeval``
(lm-evaluation-harness, with datasets, pandas, scikit-learn, ...) is kept out of ``all``
for its weight; the ``test`` extra has it.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module: str, extra: str, purpose: str | None = None) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtraError` naming ``extra``.

    ``purpose``: what needs it, for the message (default: the extra's name).
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        top = module.split(".")[0]
        if error.name is not None and error.name.split(".")[0] != top:
            raise  # the module exists but one of its own imports failed: not ours to rename
        need = purpose or f"the {extra!r} extra"
        raise MissingExtraError(
            f"{need} needs the optional dependency {top!r}, which is not installed; "
            f"install it with: pip install 'spectral-edit[{extra}]'"
        ) from error
