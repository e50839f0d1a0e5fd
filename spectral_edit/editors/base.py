"""What every editor (SEA and the baselines) offers, and the implementation they share.

:class:`Editor` is the protocol: a frozen editor fitted for a model of ``hidden_size``
and ``num_layers`` (decoder layers found at ``layer_path``), with a strength ``alpha``
(0 = the unedited model), that edits a model through forward hooks (``attach`` until the
handle is removed, or ``apply`` for a ``with`` block) and is stored in one file of its
class's :class:`~spectral_edit.editors.file_format.EditorFormat`.

:class:`EditorBase` implements the shared part for frozen editor dataclasses (checking
the model, applying, saving and loading); :class:`SiteEditor` adds the per-layer edit of
the activation at a decoder layer's :class:`~spectral_edit.core.options.Site`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self, TypeVar, runtime_checkable

import torch
from torch import nn

from ..core.options import Positions, Site, check_alpha
from ..hf.hooks import HookFn, HookHandle, HookSite, add_hooks
from ..hf.layers import site_modules
from ..hf.positions import PositionTracker
from .file_format import (
    EditorFileError,
    EditorFormat,
    check_fits,
    read_editor_file,
    warn_if_other_model,
    write_editor_file,
)
from .hub import DEFAULT_FILENAME

if TYPE_CHECKING:
    from .hub import HubReference

K = TypeVar("K", bound=Hashable)
"""The key of a module mapping (a layer index, a module name), passed back to hooks."""


@runtime_checkable
class Editor(Protocol):
    """Any editor this library fits, saves and loads."""

    FORMAT: ClassVar[EditorFormat]
    """The class's file format (its ``name`` identifies the kind in a file's header)."""

    @property
    def hidden_size(self) -> int:
        """The width ``d`` of the model the editor was fitted for."""
        ...

    @property
    def num_layers(self) -> int:
        """The decoder layer count of that model."""
        ...

    @property
    def alpha(self) -> float:
        """The edit strength; ``0`` leaves the model unedited."""
        ...

    @property
    def layer_path(self) -> str | None:
        """Module path of the decoder layers (``None``: found automatically)."""
        ...

    @property
    def metadata(self) -> Mapping[str, Any]:
        """What the fit recorded (JSON-able)."""
        ...

    def with_options(self, *, alpha: float | None = None) -> Self:
        """A copy with another strength (editors may accept more options)."""
        ...

    def attach(self, model: nn.Module) -> HookHandle:
        """Edit ``model`` until ``handle.remove()`` (or the end of ``with handle:``)."""
        ...

    def apply(self, model: nn.Module) -> AbstractContextManager[nn.Module]:
        """``with editor.apply(model): ...`` edits the model inside the block only."""
        ...

    def save(self, path: str | Path) -> Path:
        """Write the editor to one ``.safetensors`` file, atomically."""
        ...

    @classmethod
    def load(cls, path: str | Path, model: nn.Module | None = None) -> Self:
        """Read and validate an editor file (and, with ``model``, that it fits)."""
        ...

    def check_model(self, model: nn.Module) -> None:
        """Raise :class:`~spectral_edit.editors.file_format.EditorFileError` unless the
        editor fits ``model``."""
        ...


class EditorBase:
    """Mixin for frozen editor dataclasses with ``hidden_size``, ``num_layers``, ``alpha``,
    ``layer_path`` and ``metadata`` fields and a class-level :attr:`FORMAT`; subclasses
    implement ``with_options`` and :meth:`attach` (with :meth:`_hook_modules`)."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]
    FORMAT: ClassVar[EditorFormat]
    hidden_size: int
    num_layers: int
    alpha: float
    layer_path: str | None
    metadata: Mapping[str, Any]

    def _check_alpha(self) -> None:
        """Check the strength and store it as a float: ``ValueError`` unless it is finite
        with ``|α| <= MAX_ALPHA`` (:func:`~spectral_edit.core.options.check_alpha`). Every
        editor calls it from ``__post_init__``, so construction, ``with_options(alpha=...)``
        and loading a file (:meth:`load`, which names the file) all refuse such an α."""
        object.__setattr__(self, "alpha", check_alpha(self.alpha))

    def check_model(self, model: nn.Module) -> None:
        """Raise :class:`EditorFileError` if the editor does not fit ``model``."""
        check_fits(model, self.hidden_size, self.num_layers, self.layer_path)

    def _hook_modules(
        self,
        model: nn.Module,
        modules: Callable[[], Mapping[K, nn.Module]],
        fn: HookFn,
        *,
        on: HookSite = "output",
    ) -> HookHandle:
        """Check the model, then hook the modules ``modules()`` locates (see
        :func:`~spectral_edit.hf.hooks.add_hooks` for ``on``)."""
        self.check_model(model)
        return add_hooks(modules(), fn, on=on)

    def attach(self, model: nn.Module) -> HookHandle:  # pragma: no cover - abstract
        raise NotImplementedError

    @contextlib.contextmanager
    def apply(self, model: nn.Module) -> Iterator[nn.Module]:
        """``with editor.apply(model): ...`` edits the model inside the block only; the
        hooks are removed on exit, also after an exception."""
        with self.attach(model):
            yield model

    def save(self, path: str | Path) -> Path:
        """Write the editor to one ``.safetensors`` file in its :attr:`FORMAT`, atomically."""
        tensors, header = self.FORMAT.encode(self)
        return write_editor_file(path, tensors, header)

    @classmethod
    def load(cls, path: str | Path, model: nn.Module | None = None) -> Self:
        """Read, decode and validate an editor file of this kind; with ``model``, also check
        that the editor fits it (:meth:`check_model`).

        Raises:
            EditorFileError: naming the file, for any failure (unreadable, another kind or
                version, corrupted, missing, malformed or non-finite fields, an invalid
                editor, or one that does not fit ``model``).

        Warns:
            EditorModelWarning: ``model`` fits but is not the model recorded at fit time.
        """
        path = Path(path)
        fmt = cls.FORMAT
        header, tensors = read_editor_file(path, fmt.name, fmt.version, fmt.required)
        try:
            editor = cls.from_header(header, tensors)
            if model is not None:
                editor.check_model(model)
        except (ValueError, TypeError, LookupError) as error:  # EditorFileError is a ValueError
            raise EditorFileError(f"{path}: {error}") from error
        if model is not None:
            warn_if_other_model(path, editor.metadata, model)
        return editor

    @classmethod
    def from_header(cls, header: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> Self:
        """The editor a checked header of this kind and its tensors hold (decoded by
        :attr:`FORMAT`; the entries written for readers only must agree with it).

        Raises:
            ValueError, TypeError, LookupError: a field of the wrong type or value, tensors
                other than the header names, or an invalid editor (:meth:`load` names the
                file in an :class:`EditorFileError`).
        """
        fmt = cls.FORMAT
        editor = cls(**fmt.decode(cls, header, tensors))
        fmt.check_written_only(editor, header)
        return editor

    def push_to_hub(
        self,
        repo_id: str,
        *,
        filename: str = DEFAULT_FILENAME,
        revision: str | None = None,
        private: bool | None = None,
        token: str | bool | None = None,
        commit_message: str | None = None,
        model_card: bool = True,
    ) -> HubReference:
        """Push the editor file (exactly what :meth:`save` writes) and a model card
        generated from the editor (``README.md``; ``model_card=False`` leaves the
        repository's alone) to the Hub repository ``repo_id`` in one commit, creating the
        repository (``private`` as given) and the branch ``revision`` if missing.

        Returns the ``hf://repo_id@<commit>/filename`` reference of the file pushed
        (:func:`~spectral_edit.editors.registry.load_editor` reads it back).

        Raises:
            ~spectral_edit.editors.hub.HubPushError: an invalid repository id or file
                name, or the Hub refused.
        """
        from .hub import push_editor

        return push_editor(
            self,  # type: ignore[arg-type]  # every EditorBase subclass is an Editor
            repo_id,
            filename=filename,
            revision=revision,
            private=private,
            token=token,
            commit_message=commit_message,
            model_card=model_card,
        )


class SiteEditor(EditorBase):
    """Mixin for editors that edit the activation at the ``site`` of each of their
    ``layers`` (SEA, mean difference, PCA vector, LEACE)."""

    layers: tuple[int, ...]
    site: Site

    def _check_layers(self) -> None:
        """Parse ``site`` into a :class:`Site` and check the layers are distinct and in
        range; ``ValueError`` otherwise (call from ``__post_init__``)."""
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"duplicate layers in {tuple(self.layers)}")
        for layer in self.layers:
            if not 0 <= layer < self.num_layers:
                raise ValueError(f"layer {layer} out of range for {self.num_layers} layers")
        object.__setattr__(self, "site", Site.parse(self.site, "site"))

    def _hook(
        self,
        model: nn.Module,
        layers: Sequence[int],
        edit: Callable[[int, torch.Tensor], torch.Tensor],
        positions: Positions = Positions.ALL,
    ) -> HookHandle:
        """Check the model, then apply ``edit(layer, hidden)`` at each layer's site, on the
        ``positions`` chosen (:mod:`spectral_edit.hf.positions`; the other positions keep
        their exact values)."""
        if positions is Positions.ALL:
            return self._hook_modules(
                model, lambda: site_modules(model, layers, self.site, self.layer_path), edit
            )
        tracker = PositionTracker()

        def restricted(layer: int, hidden: torch.Tensor) -> torch.Tensor:
            keep = tracker.keep_mask(hidden, positions)
            edited = edit(layer, hidden)
            return edited if keep is None else torch.where(keep, edited, hidden)

        tracking = tracker.attach(model)
        try:
            handle = self._hook_modules(
                model, lambda: site_modules(model, layers, self.site, self.layer_path), restricted
            )
        except BaseException:
            tracking.remove()
            raise
        return HookHandle.join(handle, tracking)
