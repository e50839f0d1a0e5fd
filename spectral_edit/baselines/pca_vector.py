"""PCA control vectors (repeng's ``read_representations`` with ``method="pca_diff"``).

For each edited layer ``l``, with paired activations ``h+_i, h-_i`` ``(d,)`` of the same
prompt answered positively and negatively (last token by default, as for SEA):

- ``D`` ``(N, d)``: the paired differences ``d_i = h+_i − h-_i``;
- ``u_l`` ``(d,)``: the unit first principal component of ``D`` *after centring* (as
  scikit-learn's ``PCA`` in repeng 0.4.0 does), computed with an SVD in float64;
- its sign: positives project above their negatives (``d_i · u > 0``) for the majority of
  pairs, as in repeng; a tie (repeng keeps scikit-learn's arbitrary sign) is broken
  deterministically towards ``mean_i d_i · u >= 0``;
- ``s_l = mean_i d_i · u_l``: the scale, so that ``α = 1`` moves an activation along
  ``u_l`` by the typical paired difference, comparable to mean-difference steering (``s_l``
  is the component of the mean difference along ``u_l``; it may be negative when the
  majority and the mean disagree).

At inference every token's activation at the site becomes ``h + α s_l u_l``; ``α = 0`` is
the unedited model. ``metadata["explained_variance"]`` lists, per layer (in ``layers``
order), the fraction of the centred differences' variance the first component explains.

Because the differences are centred, a perfectly consistent contrast (all ``d_i`` equal)
has no principal direction; :meth:`PCAVectorEditor.fit` refuses it.

File format: tensors ``layer.{l}.direction`` ``(d,)`` (float32), and the header's
``scales`` (one float per layer) with the editor's options.

This module also holds the small helpers the PCA and LEACE baselines share
(:func:`activation_pair`, :func:`common_header`, :func:`load_checked`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from ..editor_base import EditorBase
from ..editor_file import EditorFileError, read_editor_file, write_editor_file
from ..hooks import HookHandle
from ..layers import SITES

FORMAT_NAME = "spectral-edit/pca-vector"
FORMAT_VERSION = 1

COMMON_KEYS = ("layers", "hidden_size", "num_layers", "site", "alpha")
"""Header keys every baseline editor file has (see :func:`common_header`)."""

_UNIT_TOLERANCE = 1e-3
_DEGENERATE = 1e-10

Editor = TypeVar("Editor", bound=EditorBase)


# --------------------------------------------------------------------- shared helpers
def activation_pair(
    positive: torch.Tensor | np.ndarray,
    negative: torch.Tensor | np.ndarray,
    layers: Sequence[int],
    *,
    paired: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N+, L, d)`` and ``(N-, L, d)`` activations as float64 CPU tensors, checked:
    one width, ``L == len(layers)``, at least one row each, and ``N+ == N-`` if
    ``paired`` (row ``i`` of both is one pair)."""
    pos = _as_tensor(positive)
    neg = _as_tensor(negative)
    if pos.ndim != 3 or neg.ndim != 3 or pos.shape[1:] != neg.shape[1:]:
        raise ValueError(
            f"expected (N, L, d) arrays of one width, got {tuple(pos.shape)} and {tuple(neg.shape)}"
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


def _as_tensor(array: torch.Tensor | np.ndarray) -> torch.Tensor:
    tensor = array if torch.is_tensor(array) else torch.as_tensor(np.asarray(array))
    return tensor.detach().to("cpu", torch.float64)


def check_layers(layers: Sequence[int], num_layers: int, site: str) -> None:
    """Raise ``ValueError`` unless the layers are distinct, in range, and the site known."""
    if len(set(layers)) != len(layers):
        raise ValueError(f"duplicate layers in {tuple(layers)}")
    for layer in layers:
        if not 0 <= layer < num_layers:
            raise ValueError(f"layer {layer} out of range for {num_layers} layers")
    if site not in SITES:
        raise ValueError(f"site must be one of {SITES}, not {site!r}")


def common_header(editor: Any, format_name: str, format_version: int) -> dict[str, Any]:
    """The header fields every baseline editor file has (:data:`COMMON_KEYS` and
    ``layer_path``, ``metadata``)."""
    return {
        "format": format_name,
        "format_version": format_version,
        "layers": list(editor.layers),
        "hidden_size": editor.hidden_size,
        "num_layers": editor.num_layers,
        "site": editor.site,
        "alpha": editor.alpha,
        "layer_path": editor.layer_path,
        "metadata": dict(editor.metadata),
    }


def common_fields(header: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor keyword arguments for the :func:`common_header` fields."""
    return {
        "layers": tuple(int(layer) for layer in header["layers"]),
        "hidden_size": int(header["hidden_size"]),
        "num_layers": int(header["num_layers"]),
        "site": header["site"],
        "alpha": float(header["alpha"]),
        "layer_path": header.get("layer_path"),
        "metadata": header.get("metadata", {}),
    }


def load_checked(
    path: str | Path,
    format_name: str,
    format_version: int,
    required: tuple[str, ...],
    kinds: tuple[str, ...],
    build: Callable[[dict[str, Any], dict[str, torch.Tensor]], Editor],
    model: nn.Module | None,
) -> Editor:
    """Read an editor file whose tensors are exactly ``layer.{l}.{kind}`` for each layer
    and kind, build the editor with ``build(header, tensors)`` and, with ``model``, check
    it fits; every failure is an :class:`EditorFileError` naming the file."""
    path = Path(path)
    header, tensors = read_editor_file(path, format_name, format_version, required)
    try:
        expected = {f"layer.{int(layer)}.{kind}" for layer in header["layers"] for kind in kinds}
        if set(tensors) != expected:
            raise EditorFileError(
                f"tensors {sorted(tensors)} do not match layers {header['layers']}"
            )
        editor = build(header, tensors)
        if model is not None:
            editor.check_model(model)
    except (ValueError, TypeError, KeyError) as error:  # EditorFileError is a ValueError
        raise EditorFileError(f"{path}: {error}") from error
    return editor


# ------------------------------------------------------------------------- the PCA fit
def pca_direction(differences: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """repeng's ``pca_diff`` direction of paired differences ``(N, d)`` (float64).

    Returns ``(u, s, explained)``: the unit first principal component of the centred
    differences ``(d,)`` signed so that most pairs have ``d_i · u > 0`` (ties: towards a
    non-negative mean), the mean projection ``s = mean_i d_i · u``, and the fraction of
    the centred variance that component explains. Raises ``ValueError`` when the
    centred differences vanish (fewer than two pairs, or all differences equal).
    """
    if differences.shape[0] < 2:
        raise ValueError("the PCA of paired differences needs at least 2 pairs")
    centred = differences - differences.mean(0)
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    largest = float(differences.norm(dim=1).max())
    if not singular[0] > _DEGENERATE * max(largest, 1e-300):
        raise ValueError(
            "the paired differences do not vary (all equal after centring), so they have "
            "no first principal component; use mean-difference steering instead"
        )
    direction = vh[0]
    projections = differences @ direction
    larger = int((projections > 0).sum())
    smaller = int((projections < 0).sum())
    if smaller > larger or (smaller == larger and projections.mean() < 0):
        direction, projections = -direction, -projections
    explained = float(singular[0] ** 2 / (singular**2).sum())
    return direction, float(projections.mean()), explained


@dataclasses.dataclass(frozen=True)
class PCAVectorEditor(EditorBase):
    """Immutable PCA control-vector editor: a unit ``(d,)`` direction and a scale per layer
    (see the module docstring)."""

    layers: tuple[int, ...]
    directions: tuple[torch.Tensor, ...]
    scales: tuple[float, ...]
    hidden_size: int
    num_layers: int
    site: str = "residual"
    alpha: float = 1.0
    layer_path: str | None = None
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.directions) != len(self.layers) or len(self.scales) != len(self.layers):
            raise ValueError("one direction and one scale are needed per layer")
        check_layers(self.layers, self.num_layers, self.site)
        for layer, direction, scale in zip(self.layers, self.directions, self.scales, strict=True):
            if tuple(direction.shape) != (self.hidden_size,):
                raise ValueError(
                    f"layer {layer} direction has shape {tuple(direction.shape)}, "
                    f"expected ({self.hidden_size},)"
                )
            norm = float(direction.double().norm())
            if not abs(norm - 1.0) <= _UNIT_TOLERANCE:
                raise ValueError(f"layer {layer} direction has norm {norm:.6g}, expected 1")
            if not math.isfinite(scale):
                raise ValueError(f"layer {layer} scale {scale} is not finite")
        if not math.isfinite(self.alpha):
            raise ValueError(f"alpha {self.alpha} is not finite")

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
    ) -> PCAVectorEditor:
        """PCA control vectors from paired ``(N, L, d)`` positive and negative activations
        (row ``i`` of both arrays is one demonstration; ``N >= 2``)."""
        pos, neg = activation_pair(positive, negative, layers, paired=True)
        fitted = [pca_direction(pos[:, i] - neg[:, i]) for i in range(pos.shape[1])]
        return cls(
            layers=tuple(int(i) for i in layers),
            directions=tuple(direction.float() for direction, _, _ in fitted),
            scales=tuple(scale for _, scale, _ in fitted),
            hidden_size=int(pos.shape[2]),
            num_layers=int(num_layers),
            site=site,
            alpha=float(alpha),
            layer_path=layer_path,
            metadata={
                "n_demonstrations": int(pos.shape[0]),
                "explained_variance": [explained for _, _, explained in fitted],
                **dict(metadata or {}),
            },
        )

    def with_options(self, *, alpha: float | None = None) -> PCAVectorEditor:
        """A copy with another strength."""
        return self if alpha is None else dataclasses.replace(self, alpha=float(alpha))

    def vector(self, layer: int) -> torch.Tensor:
        """The ``(d,)`` float32 shift ``α s u`` added at ``layer``."""
        index = self.layers.index(layer)
        return (self.alpha * self.scales[index]) * self.directions[index].float()

    def edit(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        """``hidden + α s u`` for activations ``(..., d)``, in their dtype."""
        return hidden + self.vector(layer).to(device=hidden.device, dtype=hidden.dtype)

    def attach(self, model: nn.Module) -> HookHandle:
        """Steer ``model`` until ``handle.remove()``."""
        return self._hook(model, self.layers, lambda layer, hidden: self.edit(hidden, layer))

    def save(self, path: str | Path) -> Path:
        """Write the editor to one ``.safetensors`` file, atomically."""
        header = {
            **common_header(self, FORMAT_NAME, FORMAT_VERSION),
            "scales": list(self.scales),
        }
        tensors = {
            f"layer.{layer}.direction": direction
            for layer, direction in zip(self.layers, self.directions, strict=True)
        }
        return write_editor_file(path, tensors, header)

    @classmethod
    def load(cls, path: str | Path, model: nn.Module | None = None) -> PCAVectorEditor:
        """Read and validate a PCA control-vector file (and its fit to ``model``)."""

        def build(header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> PCAVectorEditor:
            fields = common_fields(header)
            return cls(
                directions=tuple(tensors[f"layer.{layer}.direction"] for layer in fields["layers"]),
                scales=tuple(float(scale) for scale in header["scales"]),
                **fields,
            )

        required = (*COMMON_KEYS, "scales")
        return load_checked(
            path, FORMAT_NAME, FORMAT_VERSION, required, ("direction",), build, model
        )
