"""What the baseline editors share, so that each piece exists once:

- :func:`activation_pair`: ``(N, L, d)`` positive/negative activations as checked float64
  CPU tensors;
- :func:`check_site`, :func:`check_layers`, :func:`check_vectors`, :func:`check_alpha`:
  field validation with one message per kind of error;
- :func:`editor_header` / :func:`editor_fields` (and :func:`common_header` /
  :func:`common_fields` for per-layer editors): the header fields every baseline file has,
  written and read back;
- :func:`load_validated` (and :func:`load_checked` for per-layer tensors): read a file,
  build the editor and check it fits a model, every failure an
  :class:`~spectral_edit.editors.file_format.EditorFileError` naming the file;
- :class:`LayerEditor`: ``fit`` / ``with_options`` / ``attach`` / ``save`` / ``load`` of
  the editors that add a per-layer edit at a decoder-layer site (mean difference, PCA
  vector, LEACE), which only implement their fit per layer and their edit.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

import numpy as np
import torch
from torch import nn

from ...hf.hooks import HookHandle
from ...hf.layers import SITES
from ..base import EditorBase
from ..file_format import EditorFileError, read_editor_file, write_editor_file

EDITOR_KEYS = ("hidden_size", "num_layers", "alpha")
"""Header keys every baseline editor file has (see :func:`editor_header`)."""

COMMON_KEYS = ("layers", "hidden_size", "num_layers", "site", "alpha")
"""Header keys every per-layer baseline editor file has (see :func:`common_header`)."""

Editor = TypeVar("Editor", bound=EditorBase)


# ----------------------------------------------------------------------- activations
def as_float64(array: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``array`` (a tensor or anything ``np.asarray`` takes) as a detached float64 CPU
    tensor of the same shape."""
    tensor = array if torch.is_tensor(array) else torch.as_tensor(np.asarray(array))
    return tensor.detach().to("cpu", torch.float64)


def activation_pair(
    positive: torch.Tensor | np.ndarray,
    negative: torch.Tensor | np.ndarray,
    layers: Sequence[int],
    *,
    paired: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N+, L, d)`` and ``(N-, L, d)`` activations as float64 CPU tensors, checked:
    one ``(L, d)``, ``L == len(layers)``, at least one row each, and ``N+ == N-`` if
    ``paired`` (row ``i`` of both is one pair)."""
    pos = as_float64(positive)
    neg = as_float64(negative)
    if pos.ndim != 3 or neg.ndim != 3 or pos.shape[1:] != neg.shape[1:]:
        raise ValueError(
            f"expected (N, L, d) arrays of one shape but for N, got {tuple(pos.shape)} and "
            f"{tuple(neg.shape)}"
        )
    if pos.shape[1] != len(layers):
        raise ValueError(f"{len(layers)} layer ids for arrays with {pos.shape[1]} layers")
    if pos.shape[0] == 0 or neg.shape[0] == 0:
        raise ValueError("need at least one positive and one negative activation")
    if paired and pos.shape[0] != neg.shape[0]:
        raise ValueError(
            f"paired activations need as many positives as negatives, got {pos.shape[0]} "
            f"and {neg.shape[0]}"
        )
    return pos, neg


# ------------------------------------------------------------------------ validation
def check_site(site: str) -> None:
    """Raise ``ValueError`` unless ``site`` is one of :data:`~spectral_edit.hf.layers.SITES`."""
    if site not in SITES:
        raise ValueError(f"site must be one of {SITES}, not {site!r}")


def check_layers(layers: Sequence[int], num_layers: int, site: str) -> None:
    """Raise ``ValueError`` unless the layers are distinct, in range, and the site known."""
    if len(set(layers)) != len(layers):
        raise ValueError(f"duplicate layers in {tuple(layers)}")
    for layer in layers:
        if not 0 <= layer < num_layers:
            raise ValueError(f"layer {layer} out of range for {num_layers} layers")
    check_site(site)


def check_vectors(
    kind: str, layers: Sequence[int], vectors: Sequence[torch.Tensor], hidden_size: int
) -> None:
    """Raise ``ValueError`` unless every per-layer ``kind`` vector is ``(hidden_size,)``."""
    for layer, vector in zip(layers, vectors, strict=True):
        if tuple(vector.shape) != (hidden_size,):
            raise ValueError(
                f"layer {layer} {kind} has shape {tuple(vector.shape)}, expected ({hidden_size},)"
            )


def check_alpha(alpha: float) -> None:
    """Raise ``ValueError`` unless the strength ``alpha`` is finite."""
    if not math.isfinite(alpha):
        raise ValueError(f"alpha {alpha} is not finite")


# ---------------------------------------------------------------------------- header
def editor_header(
    editor: Any, format_name: str, format_version: int, **fields: Any
) -> dict[str, Any]:
    """An editor file's header: the format, the editor's own ``fields``, then the fields
    every baseline has (:data:`EDITOR_KEYS`, ``layer_path`` and ``metadata``)."""
    return {
        "format": format_name,
        "format_version": format_version,
        **fields,
        "hidden_size": editor.hidden_size,
        "num_layers": editor.num_layers,
        "alpha": editor.alpha,
        "layer_path": editor.layer_path,
        "metadata": dict(editor.metadata),
    }


def editor_fields(header: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor keyword arguments for the :func:`editor_header` shared fields."""
    return {
        "hidden_size": int(header["hidden_size"]),
        "num_layers": int(header["num_layers"]),
        "alpha": float(header["alpha"]),
        "layer_path": header.get("layer_path"),
        "metadata": header.get("metadata", {}),
    }


def common_header(editor: Any, format_name: str, format_version: int) -> dict[str, Any]:
    """The header fields every per-layer baseline editor file has (:data:`COMMON_KEYS`
    and ``layer_path``, ``metadata``)."""
    return editor_header(
        editor, format_name, format_version, layers=list(editor.layers), site=editor.site
    )


def common_fields(header: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor keyword arguments for the :func:`common_header` fields."""
    return {
        "layers": tuple(int(layer) for layer in header["layers"]),
        "site": header["site"],
        **editor_fields(header),
    }


# ---------------------------------------------------------------------------- loading
def load_validated(
    path: str | Path,
    format_name: str,
    format_version: int,
    required: tuple[str, ...],
    tensor_names: Callable[[dict[str, Any]], Collection[str]],
    build: Callable[[dict[str, Any], dict[str, torch.Tensor]], Editor],
    model: nn.Module | None,
) -> Editor:
    """Read an editor file whose tensors are exactly ``tensor_names(header)``, build the
    editor with ``build(header, tensors)`` and, with ``model``, check it fits
    (``editor.check_model``); every failure is an :class:`EditorFileError` naming the
    file."""
    path = Path(path)
    header, tensors = read_editor_file(path, format_name, format_version, required)
    try:
        expected = set(tensor_names(header))
        if set(tensors) != expected:
            raise EditorFileError(
                f"tensors {sorted(tensors)} do not match the expected {sorted(expected)}"
            )
        editor = build(header, tensors)
        if model is not None:
            editor.check_model(model)
    except (ValueError, TypeError, KeyError) as error:  # EditorFileError is a ValueError
        raise EditorFileError(f"{path}: {error}") from error
    return editor


def layer_tensor_name(layer: int, kind: str) -> str:
    """The file's name for layer ``layer``'s ``kind`` tensor: ``layer.{layer}.{kind}``."""
    return f"layer.{int(layer)}.{kind}"


def load_checked(
    path: str | Path,
    format_name: str,
    format_version: int,
    required: tuple[str, ...],
    kinds: tuple[str, ...],
    build: Callable[[dict[str, Any], dict[str, torch.Tensor]], Editor],
    model: nn.Module | None,
) -> Editor:
    """:func:`load_validated` for a file whose tensors are exactly ``layer.{l}.{kind}``
    for each of the header's ``layers`` and each kind."""

    def names(header: dict[str, Any]) -> set[str]:
        return {layer_tensor_name(layer, kind) for layer in header["layers"] for kind in kinds}

    return load_validated(path, format_name, format_version, required, names, build, model)


# ------------------------------------------------------------------- per-layer editors
class LayerEditor(EditorBase):
    """Mixin for frozen dataclass editors that edit each of ``layers`` at ``site`` with
    per-layer tensors fitted from ``(N, L, d)`` positive and negative activations.

    A subclass declares its fields (``layers``, its per-layer tensor tuples, then
    ``hidden_size``, ``num_layers``, ``site``, ``alpha``, ``layer_path``, ``metadata``)
    and the class constants below, and implements :meth:`_fit_layers` and :meth:`edit`.

    File format: one tensor ``layer.{l}.{kind}`` per layer and :attr:`_tensors` kind, the
    :func:`common_header` fields and, per :attr:`_scalars` field, a list of one float per
    layer.
    """

    layers: tuple[int, ...]
    alpha: float
    metadata: Mapping[str, Any]

    _format: ClassVar[tuple[str, int]]
    """``(FORMAT_NAME, FORMAT_VERSION)`` of the editor's files."""
    _tensors: ClassVar[tuple[tuple[str, str], ...]]
    """``(kind in the file, field name)`` of each per-layer tensor tuple field."""
    _scalars: ClassVar[tuple[str, ...]] = ()
    """Per-layer float tuple fields, stored in the header under their own name."""
    _paired: ClassVar[bool] = False
    """Whether :meth:`fit` needs paired activations (row ``i`` of both is one pair)."""

    @classmethod
    def fit(
        cls,
        positive: torch.Tensor | np.ndarray,
        negative: torch.Tensor | np.ndarray,
        *,
        layers: Sequence[int],
        num_layers: int,
        alpha: float = 1.0,
        site: str = "residual",
        layer_path: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Self:
        """Fit from ``(N+, L, d)`` positive and ``(N-, L, d)`` negative activations at
        ``layers`` (``N+ == N-`` and row ``i`` of both one pair if the editor is paired;
        see the class docstring); ``metadata`` is added to what the fit records."""
        pos, neg = activation_pair(positive, negative, layers, paired=cls._paired)
        fields, info = cls._fit_layers(pos, neg)
        return cls(
            layers=tuple(int(i) for i in layers),
            hidden_size=int(pos.shape[2]),
            num_layers=int(num_layers),
            site=site,
            alpha=float(alpha),
            layer_path=layer_path,
            metadata={**info, **dict(metadata or {})},
            **fields,
        )

    @classmethod
    def _fit_layers(
        cls, positive: torch.Tensor, negative: torch.Tensor
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """From checked float64 ``(N+, L, d)`` and ``(N-, L, d)`` activations: the
        per-layer fields (one entry per layer, in order) and the fit's metadata."""
        raise NotImplementedError  # pragma: no cover - abstract

    def edit(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        """The edited activations ``(..., d)`` at ``layer``, in their dtype."""
        raise NotImplementedError  # pragma: no cover - abstract

    def with_options(self, *, alpha: float | None = None) -> Self:
        """A copy with another strength."""
        return self if alpha is None else dataclasses.replace(self, alpha=float(alpha))

    def attach(self, model: nn.Module) -> HookHandle:
        """Edit ``model`` (:meth:`edit` at each layer's site) until ``handle.remove()``."""
        return self._hook(model, self.layers, lambda layer, hidden: self.edit(hidden, layer))

    def save(self, path: str | Path) -> Path:
        """Write the editor to one ``.safetensors`` file, atomically."""
        header = {
            **common_header(self, *self._format),
            **{name: list(getattr(self, name)) for name in self._scalars},
        }
        tensors = {
            layer_tensor_name(layer, kind): getattr(self, field)[index]
            for index, layer in enumerate(self.layers)
            for kind, field in self._tensors
        }
        return write_editor_file(path, tensors, header)

    @classmethod
    def load(cls, path: str | Path, model: nn.Module | None = None) -> Self:
        """Read and validate an editor file of this kind (and its fit to ``model``)."""

        def build(header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Self:
            fields = common_fields(header)
            per_layer = {
                field: tuple(tensors[layer_tensor_name(layer, kind)] for layer in fields["layers"])
                for kind, field in cls._tensors
            }
            scalars = {name: tuple(float(v) for v in header[name]) for name in cls._scalars}
            return cls(**per_layer, **scalars, **fields)

        kinds = tuple(kind for kind, _ in cls._tensors)
        required = (*COMMON_KEYS, *cls._scalars)
        return load_checked(path, *cls._format, required, kinds, build, model)
