"""Composed editors: several editors (of any kinds) applied at once, in a defined order.

A :class:`ComposedEditor` is an editor (the :class:`~.base.Editor` protocol) holding an
ordered tuple of member editors, all fitted for one model shape (hidden size, layers).

**Order.** :meth:`ComposedEditor.attach` attaches the members in the order given, each
through its own ``attach`` (so through the one hook machinery, :mod:`spectral_edit.hf.hooks`).
PyTorch runs the forward hooks of a module in registration order, each on the output the
previous one returned (and a module's forward pre-hooks likewise, on its input). So at a
module hooked by several members **the first listed acts first**: for members ``(A, B)``
editing the same layer's output ``h``, the layer returns ``B(A(h))``. Members that hook
different modules act in the model's own order, whatever their place in the list (an ITI
edit of layer 5's attention projection input comes before a SEA edit of layer 5's output
and after any edit of layer 4). Hooks already on the model when the composition is
attached run before its members'.

**Strength.** ``alpha`` is a factor on every member's own strength: member ``i`` acts at
``alpha · α_i`` (``alpha = 1``, the default: each member as fitted; ``0``: the unedited
model). ``with_options(alpha=a)`` sets that factor; :attr:`ComposedEditor.members` are the
members at their effective strengths.

**Nesting.** A member that is itself a composition is replaced by its members (at their
effective strengths), so a composition never holds another.

**File format** ``spectral-edit/composition`` version 1 (one file of the one editor file
format, :mod:`.file_format`): member ``i``'s tensors are stored as
``member.{i}.{name}``, ``name`` the tensor's name in the member's own format; the header
holds ``hidden_size``, ``num_layers``, ``alpha``, ``metadata`` and ``members``: each
member's own header (its ``format``, ``format_version`` and fields, as its own file would
hold them, without a hash). The whole file has one content hash; each member is decoded
and checked by its own format (:meth:`~.base.EditorBase.from_header`) and every error
names the file and the member.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..hf.hooks import HookHandle
from .base import Editor, EditorBase
from .file_format import (
    EditorFileError,
    EditorFormat,
    check_header,
    read_editor_file,
    warn_if_other_model,
    write_editor_file,
)

MEMBER_TENSOR = "member.{}.{}"
"""How member ``i``'s tensor ``name`` is named in a composition file."""


@dataclasses.dataclass(frozen=True, eq=False)
class ComposedEditor(EditorBase):
    """Immutable composition of ``editors`` (at least one), applied in their order at
    strength factor ``alpha`` (module docstring). ``hidden_size``, ``num_layers`` and
    ``layer_path`` are the members' (``layer_path``: the first member's that names one)."""

    editors: tuple[Editor, ...]
    alpha: float = 1.0
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    hidden_size: int = dataclasses.field(init=False)
    num_layers: int = dataclasses.field(init=False)
    layer_path: str | None = dataclasses.field(init=False)

    FORMAT = EditorFormat(
        "spectral-edit/composition",
        1,
        header=("hidden_size", "num_layers", "alpha", "metadata", "members"),
        tensors=(),
        optional=("metadata",),
    )

    def __post_init__(self) -> None:
        flat: list[Editor] = []
        for editor in self.editors:
            if isinstance(editor, ComposedEditor):
                flat.extend(editor.members)
            elif isinstance(editor, Editor):
                flat.append(editor)
            else:
                raise TypeError(f"cannot compose {type(editor).__name__}: it is not an editor")
        if not flat:
            raise ValueError("a composition needs at least one editor")
        first = flat[0]
        for index, editor in enumerate(flat[1:], start=1):
            if (editor.hidden_size, editor.num_layers) != (first.hidden_size, first.num_layers):
                raise ValueError(
                    f"cannot compose editors fitted for different models: member 0 "
                    f"({type(first).__name__}) is for hidden size {first.hidden_size} with "
                    f"{first.num_layers} layers, member {index} ({type(editor).__name__}) for "
                    f"hidden size {editor.hidden_size} with {editor.num_layers} layers"
                )
        object.__setattr__(self, "editors", tuple(flat))
        self._check_alpha()
        object.__setattr__(self, "metadata", dict(self.metadata))
        object.__setattr__(self, "hidden_size", int(first.hidden_size))
        object.__setattr__(self, "num_layers", int(first.num_layers))
        paths = [e.layer_path for e in flat if e.layer_path is not None]
        object.__setattr__(self, "layer_path", paths[0] if paths else None)

    # ----------------------------------------------------------------- inspection
    @property
    def members(self) -> tuple[Editor, ...]:
        """The member editors at their effective strengths (``alpha · α_i``), in order."""
        if self.alpha == 1.0:
            return self.editors
        return tuple(e.with_options(alpha=self.alpha * e.alpha) for e in self.editors)

    def __len__(self) -> int:
        return len(self.editors)

    # --------------------------------------------------------------------- options
    def with_options(self, *, alpha: float | None = None) -> ComposedEditor:
        """A copy with another strength factor (every member at ``alpha · α_i``)."""
        if alpha is None:
            return self
        changed = dataclasses.replace(self, alpha=float(alpha))
        changed.members  # noqa: B018 - a member refusing its scaled strength fails here
        return changed

    # ----------------------------------------------------------------- application
    def check_model(self, model: nn.Module) -> None:
        """Raise :class:`EditorFileError` unless every member fits ``model``."""
        for editor in self.editors:
            editor.check_model(model)

    def attach(self, model: nn.Module) -> HookHandle:
        """Attach every member in order (module docstring) until ``handle.remove()``; if
        one fails to attach, the hooks of those attached before it are removed."""
        handles: list[HookHandle] = []
        try:
            for editor in self.members:
                handles.append(editor.attach(model))
        except BaseException:
            for handle in reversed(handles):
                handle.remove()
            raise
        return HookHandle.join(*handles)

    # ------------------------------------------------------------------ file format
    def save(self, path: str | Path) -> Path:
        """Write the composition to one ``.safetensors`` file, atomically."""
        tensors: dict[str, torch.Tensor] = {}
        members: list[dict[str, Any]] = []
        for index, editor in enumerate(self.editors):
            member_tensors, header = editor.FORMAT.encode(editor)
            members.append(header)
            for name, tensor in member_tensors.items():
                tensors[MEMBER_TENSOR.format(index, name)] = tensor
        header = {
            "format": self.FORMAT.name,
            "format_version": self.FORMAT.version,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "alpha": self.alpha,
            "metadata": dict(self.metadata),
            "members": members,
        }
        return write_editor_file(path, tensors, header)

    @classmethod
    def load(cls, path: str | Path, model: nn.Module | None = None) -> ComposedEditor:
        """Read and validate a composition file (and, with ``model``, that every member
        fits it).

        Raises:
            EditorFileError: naming the file (and the member), for any failure: those of
                every editor file, a member of an unknown kind or version, tensors that
                belong to no member, or members of different model shapes.

        Warns:
            EditorModelWarning: ``model`` fits but is not the model a member recorded.
        """
        path = Path(path)
        fmt = cls.FORMAT
        header, tensors = read_editor_file(path, fmt.name, fmt.version, fmt.required)
        editors = _decode_members(path, header, tensors)
        try:
            metadata = dict(header.get("metadata") or {})
            composed = cls(tuple(editors), float(header["alpha"]), metadata)
            stated = (header["hidden_size"], header["num_layers"])
            if stated != (composed.hidden_size, composed.num_layers):
                raise ValueError(
                    f"header says hidden size {stated[0]} with {stated[1]} layers, the members "
                    f"are for hidden size {composed.hidden_size} with {composed.num_layers}"
                )
            if model is not None:
                composed.check_model(model)
        except (ValueError, TypeError, LookupError) as error:
            raise EditorFileError(f"{path}: {error}") from error
        if model is not None:
            for index, editor in enumerate(editors):
                warn_if_other_model(Path(f"{path} (member {index})"), editor.metadata, model)
        return composed


def _decode_members(
    path: Path, header: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
) -> list[Editor]:
    """The member editors of a composition file's checked header and tensors."""
    from .registry import editor_classes  # the registry lists this class too

    members = header["members"]
    if not isinstance(members, list) or not members:
        raise EditorFileError(f"{path}: 'members' must be a non-empty list of editor headers")
    classes = editor_classes()
    editors: list[Editor] = []
    claimed: set[str] = set()
    for index, member in enumerate(members):
        where = f"{path}: member {index}"
        if not isinstance(member, dict):
            raise EditorFileError(f"{where}: its header must be a JSON object")
        name = member.get("format")
        cls = classes.get(name) if isinstance(name, str) else None
        if cls is None or cls is ComposedEditor:
            raise EditorFileError(
                f"{where}: unknown member format {name!r}; known: "
                f"{sorted(n for n, c in classes.items() if c is not ComposedEditor)}"
            )
        fmt = cls.FORMAT
        check_header(member, fmt.name, fmt.version, fmt.required, where)
        prefix = MEMBER_TENSOR.format(index, "")
        own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        claimed.update(prefix + k for k in own)
        try:
            editors.append(cls.from_header(member, own))  # type: ignore[attr-defined]
        except (ValueError, TypeError, LookupError) as error:
            raise EditorFileError(f"{where} ({name}): {error}") from error
    stray = sorted(set(tensors) - claimed)
    if stray:
        raise EditorFileError(
            f"{path}: tensors {stray[:5]} belong to no member; the file is damaged or "
            "mislabelled: copy the file again, or compose the editors again"
        )
    return editors


def members_of(editor: Editor) -> tuple[Editor, ...]:
    """The editors ``editor`` applies: a composition's members (at their effective
    strengths), else ``(editor,)``."""
    return editor.members if isinstance(editor, ComposedEditor) else (editor,)


def compose(editors: Sequence[Editor], *, alpha: float = 1.0, **metadata: Any) -> Editor:
    """The editor applying ``editors`` in order: the one editor itself (at ``alpha`` times
    its strength) when there is one, else a :class:`ComposedEditor`."""
    if len(editors) == 1 and not isinstance(editors[0], ComposedEditor) and not metadata:
        only = editors[0]
        return only if alpha == 1.0 else only.with_options(alpha=alpha * only.alpha)
    return ComposedEditor(tuple(editors), alpha, metadata)
