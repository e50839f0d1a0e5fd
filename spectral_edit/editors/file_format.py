"""One file format for every editor, with one header codec.

A file is a ``.safetensors`` file of float32 tensors whose metadata key ``spectral_edit``
holds a JSON header: ``format`` and ``format_version`` first, then the editor's header
fields, then ``content_sha256`` (over the header without it and the tensors). Written
atomically, read with validation; only safetensors and JSON are ever parsed.

Each editor class declares its :class:`EditorFormat`: the name and version, which of its
dataclass fields go in the header (in file order; a header field is read back as the type
its annotation names, lists becoming tuples) and how its tensor fields are named in the
file (:class:`TensorField`). :meth:`EditorFormat.encode` and :meth:`EditorFormat.decode`
are the one codec of every kind of editor (``EditorBase.save`` / ``EditorBase.load`` use
them); every failure to read a file is an :class:`EditorFileError` naming the file.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import types
import typing
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
    """Write tensors (stored as float32 on the CPU) and the header, atomically.

    The header is stored as JSON (tuples become lists, string enums strings, mapping keys
    strings); the hash is taken of that JSON form, so it is the one a reader recomputes.
    """
    path = Path(path)
    stored = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}
    plain = json.loads(json.dumps(dict(header), default=_json_default))
    full = {**plain, "content_sha256": content_hash(stored, plain)}
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


# ----------------------------------------------------------------------- the codec
EDITOR_FIELDS = ("hidden_size", "num_layers", "alpha", "layer_path", "metadata")
"""Header fields every editor has, in the order the baselines write them last."""


@dataclasses.dataclass(frozen=True)
class TensorField:
    """How an editor's tensor field is named in its file.

    ``field`` holds one tensor, stored under ``name`` (``per`` is ``None``), or a tuple
    of tensors, one per entry of the header field ``per`` (e.g. ``layers``), stored under
    ``name.format(entry)`` (e.g. ``"layer.{}.pos"`` → ``layer.3.pos``). An ``optional``
    field may be ``None``: then no tensor is written, and a file without its tensors
    reads back as ``None``.
    """

    field: str
    name: str
    per: str | None = None
    optional: bool = False

    def names(self, entries: Any) -> list[str]:
        """The file names of the tensors for ``entries`` (the ``per`` field's value)."""
        return [self.name] if self.per is None else [self.name.format(e) for e in entries]


@dataclasses.dataclass(frozen=True)
class EditorFormat:
    """The file format of one editor class.

    Attributes:
        name, version: written as ``format`` / ``format_version``; a reader accepts only
            this name and version.
        header: the attributes written to the header, in file order; each is read back
            into the constructor argument of that name, as the type its annotation names.
        tensors: the tensor fields and their names in the file (exactly these tensors).
        optional: header fields a file may lack (the field's default is used).
        written_only: header entries written for readers of the file (e.g. a derived
            property) but not read back.
        omitted_at_default: header fields written only when they differ from the field's
            default (options added in a later release: files that do not use them stay
            byte-identical to earlier ones); a file without them reads the default.
    """

    name: str
    version: int
    header: tuple[str, ...]
    tensors: tuple[TensorField, ...]
    optional: tuple[str, ...] = ("layer_path", "metadata")
    written_only: tuple[str, ...] = ()
    omitted_at_default: tuple[str, ...] = ()

    @property
    def required(self) -> tuple[str, ...]:
        """The header fields every file of this format has."""
        skip = {*self.optional, *self.written_only, *self.omitted_at_default}
        return tuple(key for key in self.header if key not in skip)

    def encode(self, editor: object) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``(tensors, header)`` of ``editor``; the header starts with the format."""
        header: dict[str, Any] = {"format": self.name, "format_version": self.version}
        defaults = {f.name: f.default for f in dataclasses.fields(editor)}  # type: ignore[arg-type]
        header.update(
            {
                key: getattr(editor, key)
                for key in self.header
                if key not in self.omitted_at_default or getattr(editor, key) != defaults[key]
            }
        )
        tensors: dict[str, torch.Tensor] = {}
        for spec in self.tensors:
            value = getattr(editor, spec.field)
            if value is None and spec.optional:
                continue
            if spec.per is None:
                tensors[spec.name] = value
            else:
                tensors.update(zip(spec.names(getattr(editor, spec.per)), value, strict=True))
        return tensors, header

    def decode(
        self, cls: type, header: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
    ) -> dict[str, Any]:
        """Constructor arguments of ``cls`` from a file's header and tensors.

        Raises:
            EditorFileError: the tensors are not exactly the ones the header names.
            ValueError, TypeError: a header value is not of its field's type.
        """
        types_ = _field_types(cls)
        fields: dict[str, Any] = {}
        for key in self.header:
            if key in header and key not in self.written_only:
                try:
                    fields[key] = _from_json(header[key], types_[key])
                except (TypeError, ValueError) as error:
                    raise type(error)(f"header field {key!r}: {error}") from error
        names = {spec: spec.names(fields[spec.per] if spec.per else ()) for spec in self.tensors}
        names = {
            spec: group
            for spec, group in names.items()
            if not (spec.optional and not any(name in tensors for name in group))
        }
        expected = {name for group in names.values() for name in group}
        if set(tensors) != expected:
            raise EditorFileError(
                f"tensors {sorted(tensors)} do not match the expected {sorted(expected)}"
            )
        for spec, group in names.items():
            found = tuple(tensors[name] for name in group)
            fields[spec.field] = found if spec.per is not None else found[0]
        return fields


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _from_json(value: Any, hint: Any) -> Any:
    """A header value parsed from JSON, as the type ``hint`` of its field: lists become
    tuples (``tuple[int, ...]``, ``tuple[tuple[int, int], ...]``), numbers ``int`` or
    ``float``; ``None``, strings (enums included: the editor parses them) and mappings
    pass as they are."""
    if value is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _from_json(value, next(arg for arg in args if arg is not type(None)))
    if origin is tuple:
        if not isinstance(value, list):
            raise TypeError(f"expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_json(item, args[0]) for item in value)
        if len(value) != len(args):
            raise ValueError(f"expected {len(args)} items, got {value!r}")
        return tuple(_from_json(item, arg) for item, arg in zip(value, args, strict=True))
    if hint in (int, float):
        return hint(value)
    return value


def _json_default(value: object) -> Any:
    """JSON form of header values ``json`` does not know: mappings become objects."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
