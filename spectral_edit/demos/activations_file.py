"""Captured activations on disk: one safetensors file per :class:`~.activations.DemoActivations`.

Format ``spectral-edit/activations`` version 1: tensors ``neutral``, ``positive`` and
``negative``, each ``(N, L, d)`` float32 with rows aligned; a header (the safetensors
metadata, strings) with ``format``, ``version``, ``layers`` (the L model layers, JSON) and
``metadata`` (JSON: what they were captured with, e.g. the model's shareable identity, the
neutral, token and site options; never a local path). Written atomically; read back only
after every check passes, with errors naming the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..util.atomic import atomic_path
from .activations import DemoActivations

ACTIVATIONS_FORMAT = "spectral-edit/activations"
ACTIVATIONS_VERSION = 1
_SETS = ("neutral", "positive", "negative")


class ActivationsFileError(ValueError):
    """An activations file that cannot be read; the message names the file and the cause."""


def save_activations(
    activations: DemoActivations,
    path: str | os.PathLike[str],
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``activations`` (float32) and JSON-able ``metadata`` to ``path`` atomically;
    returns the path."""
    tensors = {
        name: getattr(activations, name).detach().to("cpu", torch.float32).contiguous()
        for name in _SETS
    }
    header = {
        "format": ACTIVATIONS_FORMAT,
        "version": str(ACTIVATIONS_VERSION),
        "layers": json.dumps([int(i) for i in activations.layers]),
        "metadata": json.dumps(dict(metadata or {}), default=str),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), header)
    return path


def load_activations(path: str | os.PathLike[str]) -> tuple[DemoActivations, dict[str, Any]]:
    """The activations and metadata of a file :func:`save_activations` wrote.

    Raises:
        ActivationsFileError: no such file, not a safetensors file, another format or
            version, missing tensors, or shapes that disagree with each other or with the
            recorded layers.
    """
    path = Path(path)
    if not path.is_file():
        raise ActivationsFileError(f"activations file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = dict(handle.metadata() or {})
            keys = set(handle.keys())
            tensors = {name: handle.get_tensor(name) for name in _SETS if name in keys}
    except (SafetensorError, OSError) as error:
        raise ActivationsFileError(f"{path} is not a safetensors file: {error}") from None
    if header.get("format") != ACTIVATIONS_FORMAT:
        raise ActivationsFileError(
            f"{path} is not an activations file (format {header.get('format')!r}, expected "
            f"{ACTIVATIONS_FORMAT!r}; write one with sea capture)"
        )
    if header.get("version") != str(ACTIVATIONS_VERSION):
        raise ActivationsFileError(
            f"{path}: activations format version {header.get('version')!r} is not "
            f"{ACTIVATIONS_VERSION}, the one this release reads"
        )
    missing = [name for name in _SETS if name not in tensors]
    if missing:
        raise ActivationsFileError(f"{path} lacks the tensor(s) {', '.join(missing)}")
    try:
        layers = tuple(int(i) for i in json.loads(header.get("layers", "")))
        metadata = json.loads(header.get("metadata", "{}"))
    except (ValueError, TypeError):
        raise ActivationsFileError(f"{path}: its layers or metadata are not valid JSON") from None
    shape = tuple(tensors["neutral"].shape)
    for name in _SETS:
        found = tuple(tensors[name].shape)
        if len(found) != 3 or found != shape or found[1] != len(layers):
            raise ActivationsFileError(
                f"{path}: {name} has shape {found}; every set must be (N, {len(layers)}, d) "
                f"for the {len(layers)} recorded layers, the same for all three"
            )
    return DemoActivations(**tensors, layers=layers), dict(metadata)
