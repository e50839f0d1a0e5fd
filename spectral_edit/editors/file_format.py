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

What a reader guarantees (for every kind of editor): only safetensors and JSON are parsed
(a pickle renamed ``.safetensors`` is refused, never unpickled); the content hash matches;
every tensor and every number of the editor's own header fields is finite; entries written
for readers only (e.g. ``ranks``) agree with the tensors. Loading with a model also checks
that the editor fits it (:func:`check_fits`: both shapes named when not) and warns
(:class:`EditorModelWarning`) when the model differs from the one recorded at fit time
(:func:`model_identity`, which records names and content digests, never local paths).
An evaluation in another prompt format than the fit's (a chat template, or none) is warned
about too (:func:`warn_if_other_prompt_format`, :class:`EditorPromptWarning`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import types
import typing
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..demos.prompts import NO_TEMPLATE, PromptFormat
from ..hf.layers import find_decoder_layers, hidden_size_of
from ..util.atomic import atomic_path
from ..util.identity import folder_fingerprint, shareable_name

METADATA_KEY = "spectral_edit"

_REDO = "copy the file again, or refit the editor"
"""What to do about a damaged editor file (the end of the messages)."""

_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")
"""How a ``torch.save`` file starts (a zip archive, or a legacy pickle)."""


class EditorFileError(ValueError):
    """An editor file is unreadable, corrupted, of another kind, or does not fit the model."""


class EditorModelWarning(UserWarning):
    """An editor is applied to a model of its shape that is not the one it was fitted on."""


class EditorPromptWarning(UserWarning):
    """An editor is evaluated in another prompt format than it was fitted in: with a chat
    template it was fitted without, without the one it was fitted with, or with another
    template or system prompt."""


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
    _check_finite_tensors(path, stored, "refusing to write")
    plain = json.loads(json.dumps(dict(header), default=_json_default))
    full = {**plain, "content_sha256": content_hash(stored, plain)}
    with atomic_path(path) as tmp:  # creates the folder; an unwritable one is OutputError
        save_file(stored, str(tmp), metadata={METADATA_KEY: json.dumps(full)})
    return path


def editor_header(editor: Any) -> dict[str, Any]:
    """The header the file of ``editor`` (any class with a ``FORMAT``) holds, as
    :func:`write_editor_file` writes it (JSON values, ``content_sha256`` included), without
    writing a file: the editor's identity wherever it came from."""
    tensors, header = editor.FORMAT.encode(editor)
    stored = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}
    plain = json.loads(json.dumps(dict(header), default=_json_default))
    return {**plain, "content_sha256": content_hash(stored, plain)}


def _read(path: Path, with_tensors: bool) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON header (a dict, unchecked beyond that) and, if asked, the tensors."""
    if path.is_dir():
        raise EditorFileError(f"{path}: is a directory, not an editor file; pass the .safetensors")
    if not path.is_file():
        raise EditorFileError(f"{path}: no such editor file; check the path")
    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
            if with_tensors:
                # cloned into fresh (aligned) memory: some CPU kernels round differently on
                # the file buffer's offsets; a loaded editor must act exactly as the saved one
                tensors = {name: handle.get_tensor(name).clone() for name in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as error:
        raise EditorFileError(_unreadable(path, error)) from error
    if raw is None:
        raise EditorFileError(
            f"{path}: no {METADATA_KEY} metadata; not an editor file (editors are written by "
            "`sea fit` or Editor.save)"
        )
    try:
        header = json.loads(raw)
    except json.JSONDecodeError as error:
        raise EditorFileError(
            f"{path}: editor metadata is not valid JSON ({error}); {_REDO}"
        ) from error
    if not isinstance(header, dict):
        raise EditorFileError(f"{path}: editor metadata must be a JSON object")
    return header, tensors


def _unreadable(path: Path, error: Exception) -> str:
    """The message for a file safetensors cannot parse; names a ``torch.save`` pickle."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(4)
    except OSError:
        start = b""
    if start and start.startswith(_PICKLE_MAGIC):
        return (
            f"{path}: a PyTorch pickle (torch.save), not a safetensors editor file; pickles "
            "are never loaded (they can run code): save the editor with Editor.save"
        )
    return (
        f"{path}: not a readable safetensors file ({error}); it is truncated or not an "
        f"editor: {_REDO}"
    )


def _check_finite_tensors(path: Path, tensors: Mapping[str, torch.Tensor], doing: str) -> None:
    """Raise :class:`EditorFileError` naming the first tensor holding NaN or Inf."""
    for name in sorted(tensors):
        bad = int((~torch.isfinite(tensors[name])).sum())
        if bad:
            raise EditorFileError(
                f"{path}: {doing} an editor whose tensor {name!r} holds {bad} non-finite "
                f"value(s) (NaN or Inf); refit the editor"
            )


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
    check_header(header, format_name, format_version, ("content_sha256", *required), str(path))
    if content_hash(tensors, header) != header["content_sha256"]:
        raise EditorFileError(
            f"{path}: content hash mismatch; the file is corrupted or edited: {_REDO}"
        )
    _check_finite_tensors(path, tensors, "refusing to load")
    return header, tensors


def check_header(
    header: Mapping[str, Any],
    format_name: str,
    format_version: int,
    required: tuple[str, ...],
    where: str,
) -> None:
    """Raise :class:`EditorFileError` (the message starting with ``where``, e.g. the file)
    unless ``header`` names the format ``format_name`` at ``format_version`` and holds
    every ``required`` key (the header of a file, or of one member of a composition)."""
    for key in ("format", "format_version"):
        if key not in header:
            raise EditorFileError(f"{where}: editor metadata lacks {key}")
    if header["format"] != format_name:
        raise EditorFileError(f"{where}: format {header['format']!r} is not {format_name!r}")
    if header["format_version"] != format_version:
        raise EditorFileError(
            f"{where}: format version {header['format_version']} is not supported "
            f"(this library reads version {format_version}): upgrade spectral-edit, or refit "
            "the editor with this release"
        )
    missing = [key for key in required if key not in header]
    if missing:
        raise EditorFileError(f"{where}: editor metadata lacks {', '.join(missing)}")


def check_fits(model: nn.Module, hidden_size: int, num_layers: int, layer_path: str | None) -> None:
    """Raise :class:`EditorFileError`, naming both shapes, unless the model has this width
    and layer count."""
    hidden = hidden_size_of(model)
    blocks = len(find_decoder_layers(model, layer_path))
    if (hidden, blocks) != (hidden_size, num_layers):
        raise EditorFileError(
            f"editor is for a model of hidden size {hidden_size} with {num_layers} layers; "
            f"this model has hidden size {hidden} with {blocks} layers: use an editor fitted "
            "on this model (sea fit --model ...)"
        )


# ------------------------------------------------------------------ model identity
def model_identity(model: nn.Module) -> dict[str, Any]:
    """What an editor records of the model it was fitted on; never raises, holds no path.

    ``model``: the built-in name, Hub id or GGUF / folder *name* (:func:`~spectral_edit.
    util.identity.shareable_name`), else the model type; ``model_revision``: the Hub
    commit, ``sha256:<hex>`` of a GGUF, ``fingerprint:<hex>`` of a local folder's files
    (:func:`~spectral_edit.util.identity.folder_fingerprint`), else ``None``;
    ``model_type``: the architecture (``config.model_type``), else ``None``.
    """
    from transformers import PreTrainedModel

    from ..hf.models import model_name_of, resolve_revision

    if not isinstance(model, PreTrainedModel):
        return {"model": type(model).__name__, "model_revision": None, "model_type": None}
    try:
        name, revision = model_name_of(model), resolve_revision(model)
        if revision is None and Path(name).is_absolute() and Path(name).is_dir():
            revision = f"fingerprint:{folder_fingerprint(name)}"
    except Exception:  # noqa: BLE001 - metadata is descriptive only
        name, revision = type(model).__name__, None
    model_type = getattr(model.config, "model_type", None)
    return {
        "model": shareable_name(name),
        "model_revision": revision,
        "model_type": model_type if isinstance(model_type, str) and model_type else None,
    }


def identity_mismatch(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """How two :func:`model_identity` records differ: empty if they may be the same model.

    Compared: the architectures, and the revisions where both sides know them (equal
    revisions mean the same weights, whatever the names); where either revision is
    unknown, the names (a recorded name that is a local path, as editors of earlier
    releases hold, by its final name)."""
    theirs = {**recorded, "model": shareable_name(str(recorded.get("model") or ""))}

    def differs(key: str) -> bool:
        return bool(theirs.get(key) and current.get(key) and theirs[key] != current[key])

    found = []
    if differs("model_type"):
        found.append(f"architecture {theirs['model_type']!r}, not {current['model_type']!r}")
    if differs("model_revision"):
        found.append(f"weights {theirs['model_revision']}, not {current['model_revision']}")
    elif not (theirs.get("model_revision") and current.get("model_revision")) and differs("model"):
        found.append("other names, and the weights are not recorded on both sides")
    return found


def warn_if_other_model(path: Path, metadata: Mapping[str, Any], model: nn.Module) -> None:
    """Warn (:class:`EditorModelWarning`) when the model identity the editor in ``path``
    recorded at fit time is not ``model``'s (editors recording none are not checked)."""
    if metadata.get("model") is None:
        return
    current = model_identity(model)
    found = identity_mismatch(metadata, current)
    if found:
        warnings.warn(
            f"{path}: the editor was fitted on {shareable_name(str(metadata['model']))!r}, "
            f"this model is {current['model']!r} ({'; '.join(found)}); the shapes fit, but "
            "the edit may not carry over: refit the editor on this model (sea fit --model ...)",
            EditorModelWarning,
            stacklevel=3,
        )


SEA_PROMPT_OPTIONS = ("--chat-template", "--system-prompt")
"""How this library's commands name the chat template and the system prompt."""


def prompt_format_mismatch(
    recorded: Mapping[str, Any],
    prompt_format: PromptFormat,
    options: tuple[str, str] = SEA_PROMPT_OPTIONS,
) -> str | None:
    """How the prompt format an editor's metadata records (``chat_template``,
    ``system_prompt``: :meth:`~spectral_edit.demos.prompts.PromptFormat.record`) differs
    from ``prompt_format``, in words naming ``options`` (the tool's template and system
    prompt options); ``None`` if they agree or nothing is recorded (editors of earlier
    releases)."""
    fitted = recorded.get("chat_template")
    if not isinstance(fitted, str):
        return None
    template, system = options
    current = prompt_format.record()
    if fitted == current["chat_template"]:
        if recorded.get("system_prompt") == current["system_prompt"]:
            return None
        return f"another {system} than the one it was fitted with"
    if fitted == NO_TEMPLATE:
        return f"a chat template ({template}), but it was fitted on plain prompts"
    if current["chat_template"] == NO_TEMPLATE:
        return f"plain prompts, but it was fitted under a chat template: pass {template}"
    return "another chat template than the one it was fitted under (another tokenizer)"


def warn_if_other_prompt_format(
    source: object,
    metadata: Mapping[str, Any],
    prompt_format: PromptFormat,
    options: tuple[str, str] = SEA_PROMPT_OPTIONS,
) -> None:
    """Warn (:class:`EditorPromptWarning`) when the editor ``source`` names is used in
    another prompt format than the one its metadata records (:func:`prompt_format_mismatch`,
    naming ``options``)."""
    found = prompt_format_mismatch(metadata, prompt_format, options)
    if found:
        warnings.warn(
            f"{source}: the editor is used with {found}; the edit was fitted on other "
            "prompts and may not carry over",
            EditorPromptWarning,
            stacklevel=3,
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
            ValueError, TypeError: a header value is not of its field's type, or a number
                of a field other than ``metadata`` is not finite.
        """
        types_ = _field_types(cls)
        fields: dict[str, Any] = {}
        for key in self.header:
            if key in header and key not in self.written_only:
                try:
                    fields[key] = _from_json(header[key], types_[key])
                except (TypeError, ValueError) as error:
                    raise type(error)(f"header field {key!r}: {error}") from error
                if key != "metadata" and not _all_finite(fields[key]):
                    raise ValueError(f"header field {key!r} is not finite: {header[key]!r}")
        names = {spec: spec.names(fields[spec.per] if spec.per else ()) for spec in self.tensors}
        names = {
            spec: group
            for spec, group in names.items()
            if not (spec.optional and not any(name in tensors for name in group))
        }
        expected = {name for group in names.values() for name in group}
        if set(tensors) != expected:
            raise EditorFileError(
                f"tensors {sorted(tensors)} do not match the expected {sorted(expected)}; "
                f"the file is damaged or mislabelled: {_REDO}"
            )
        for spec, group in names.items():
            found = tuple(tensors[name] for name in group)
            fields[spec.field] = found if spec.per is not None else found[0]
        return fields

    def check_written_only(self, editor: object, header: Mapping[str, Any]) -> None:
        """Raise :class:`EditorFileError` unless every :attr:`written_only` entry of the
        header equals the JSON form of the loaded ``editor``'s attribute of that name (the
        entry, e.g. ``ranks``, is for readers of the file: it must tell them the truth)."""
        for key in self.written_only:
            if key not in header:
                continue
            actual = json.loads(json.dumps(getattr(editor, key), default=_json_default))
            if header[key] != actual:
                raise EditorFileError(
                    f"header entry {key!r} is {header[key]!r} but the tensors give {actual!r}; "
                    f"the header was edited: {_REDO}"
                )


def _all_finite(value: Any) -> bool:
    """Whether every float in ``value`` (nested tuples, lists and mappings) is finite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (tuple, list)):
        return all(_all_finite(item) for item in value)
    if isinstance(value, Mapping):
        return all(_all_finite(item) for item in value.values())
    return True


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _from_json(value: Any, hint: Any) -> Any:
    """A header value parsed from JSON, as the type ``hint`` of its field: lists become
    tuples (``tuple[int, ...]``, ``tuple[tuple[int, int], ...]``), an ``int`` must be an
    integer and a ``float`` a number (``true`` is neither), a ``bool`` a boolean, a mapping
    an object, and ``null`` is taken only where the hint is optional; strings (enums
    included: the editor parses them) pass as they are.

    Raises:
        TypeError: the value is not of that type.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _from_json(value, next(arg for arg in args if arg is not type(None)))
    if hint is Any:
        return value
    if value is None:
        raise TypeError("expected a value, got null")
    if origin is tuple:
        if not isinstance(value, list):
            raise TypeError(f"expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_json(item, args[0]) for item in value)
        if len(value) != len(args):
            raise ValueError(f"expected {len(args)} items, got {value!r}")
        return tuple(_from_json(item, arg) for item, arg in zip(value, args, strict=True))
    kind = origin or hint
    if kind in _JSON_TYPES:
        wrong_bool = isinstance(value, bool) != (hint is bool)  # JSON true is no number
        if wrong_bool or not isinstance(value, _JSON_TYPES[kind]):
            raise TypeError(f"expected {_JSON_NAMES[kind]}, got {value!r}")
    return float(value) if hint is float else value


_JSON_TYPES: dict[Any, type | tuple[type, ...]] = {
    int: int,
    float: (int, float),
    bool: bool,
    str: str,
    Mapping: dict,
    dict: dict,
}
"""The JSON (Python) types a header value of each field type must have."""

_JSON_NAMES = {int: "an integer", float: "a number", bool: "a boolean", str: "a string"}
_JSON_NAMES |= {Mapping: "an object", dict: "an object"}


def _json_default(value: object) -> Any:
    """JSON form of header values ``json`` does not know: mappings become objects."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
