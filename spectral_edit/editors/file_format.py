"""One file format for every editor: a ``.safetensors`` file of tensors whose metadata key
``spectral_edit`` holds a JSON header with ``format``, ``format_version`` and
``content_sha256`` (over the header and the tensors). Written atomically, read with
validation; only safetensors and JSON are ever parsed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..hf.layers import find_decoder_layers, hidden_size_of
from ..util.atomic import atomic_path

METADATA_KEY = "spectral_edit"


class EditorFileError(ValueError):
    """An editor file is unreadable, corrupted, of another kind, or does not fit the model."""


def content_hash(tensors: Mapping[str, torch.Tensor], header: Mapping[str, Any]) -> str:
    """sha256 over the header (without the hash itself) and the float32 tensors."""
    digest = hashlib.sha256()
    options = {k: v for k, v in header.items() if k != "content_sha256"}
    digest.update(json.dumps(options, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].to(torch.float32).contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def write_editor_file(
    path: str | Path, tensors: Mapping[str, torch.Tensor], header: Mapping[str, Any]
) -> Path:
    """Write tensors (stored as float32 on the CPU) and the header, atomically."""
    path = Path(path)
    stored = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}
    full = {**header, "content_sha256": content_hash(stored, header)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(stored, str(tmp), metadata={METADATA_KEY: json.dumps(full)})
    return path


def _read(path: Path, with_tensors: bool) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON header (a dict, unchecked beyond that) and, if asked, the tensors."""
    if not path.is_file():
        raise EditorFileError(f"{path}: no such editor file")
    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
            if with_tensors:
                # cloned into fresh (aligned) memory: some CPU kernels round differently on
                # the file buffer's offsets; a loaded editor must act exactly as the saved one
                tensors = {name: handle.get_tensor(name).clone() for name in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as error:
        raise EditorFileError(f"{path}: not a readable safetensors file ({error})") from error
    if raw is None:
        raise EditorFileError(f"{path}: no {METADATA_KEY} metadata; not an editor file")
    try:
        header = json.loads(raw)
    except json.JSONDecodeError as error:
        raise EditorFileError(f"{path}: editor metadata is not valid JSON ({error})") from error
    if not isinstance(header, dict):
        raise EditorFileError(f"{path}: editor metadata must be a JSON object")
    return header, tensors


def read_format(path: str | Path) -> str:
    """The ``format`` named in an editor file's header (not yet validated further)."""
    header, _ = _read(Path(path), with_tensors=False)
    if not isinstance(header.get("format"), str):
        raise EditorFileError(f"{path}: editor metadata lacks format")
    return header["format"]


def read_editor_file(
    path: str | Path, format_name: str, format_version: int, required: tuple[str, ...] = ()
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read and check an editor file of kind ``format_name``; returns (header, tensors)."""
    path = Path(path)
    header, tensors = _read(path, with_tensors=True)
    for key in ("format", "format_version"):
        if key not in header:
            raise EditorFileError(f"{path}: editor metadata lacks {key}")
    if header["format"] != format_name:
        raise EditorFileError(f"{path}: format {header['format']!r} is not {format_name!r}")
    if header["format_version"] != format_version:
        raise EditorFileError(
            f"{path}: format version {header['format_version']} is not supported "
            f"(this library reads version {format_version})"
        )
    missing = [key for key in ("content_sha256", *required) if key not in header]
    if missing:
        raise EditorFileError(f"{path}: editor metadata lacks {', '.join(missing)}")
    if content_hash(tensors, header) != header["content_sha256"]:
        raise EditorFileError(f"{path}: content hash mismatch; the file is corrupted or edited")
    return header, tensors


def check_fits(model: nn.Module, hidden_size: int, num_layers: int, layer_path: str | None) -> None:
    """Raise :class:`EditorFileError` unless the model has this width and layer count."""
    hidden = hidden_size_of(model)
    blocks = len(find_decoder_layers(model, layer_path))
    if hidden != hidden_size:
        raise EditorFileError(f"editor is for hidden size {hidden_size}, the model has {hidden}")
    if blocks != num_layers:
        raise EditorFileError(
            f"editor is for a model with {num_layers} layers, this one has {blocks}"
        )
