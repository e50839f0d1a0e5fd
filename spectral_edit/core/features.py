"""Element-wise feature maps for non-linear Φ-SEA (method.md, "Non-linear Φ-SEA").

Every map φ acts element-wise on activations with a per-layer scale ``s > 0``::

    φ_s(x)      = φ(x / s)
    φ_s^{-1}(y) = s · φ^{-1}(y)

``s`` defaults to :func:`rms_scale` of the layer's neutral activations at fit time:
residual-stream activations are far larger than 1, where tanh and the Gaussian
saturate.

Shapes: every function accepts a tensor of any shape ``(..., d)`` and returns a tensor
of the same shape and dtype.  ``scale`` is a Python float or a tensor broadcastable to
the input (a 0-d tensor, or shape ``(d,)`` for a per-feature scale).  ``reference``
(squared-exponential only) has the input's shape.

Precision: half-precision inputs (float16 / bfloat16) are computed in float32, float32
in float32 and float64 in float64; the result is cast back to the input dtype.  The
clamping margin ε of an inverse is chosen from the dtype of the tensor being inverted
(see :func:`clamp_margin`), so that every value the forward map can produce in that
dtype stays invertible and every other value maps to a finite number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .options import Feature

__all__ = [
    "FeatureMap",
    "clamp_margin",
    "compute_dtype",
    "get_feature_map",
    "rms_scale",
]


def clamp_margin(dtype: torch.dtype) -> float:
    """Return ε, the gap between 1 and the largest number below 1 representable in ``dtype``.

    For a binary floating-point type this is ``finfo(dtype).eps / 2`` (float32: 5.96e-8,
    float16: 4.88e-4, bfloat16: 3.91e-3).  tanh's inverse clamps its argument to
    ``±(1 − ε)`` and elu's inverse clamps to ``≥ −1 + ε``: these bounds are the closest a
    value of ``dtype`` can be to ±1 without being ±1, so no representable output of the
    forward map is altered and saturated values (exactly ±1) give the largest finite
    inverse.

    Raises:
        TypeError: if ``dtype`` is not a floating-point dtype.
    """
    if not dtype.is_floating_point:
        raise TypeError(f"feature maps need a floating-point tensor, got dtype {dtype}")
    return torch.finfo(dtype).eps / 2


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the feature maps and the edit compute in for tensors of ``dtype``: at
    least float32 (float16/bfloat16 → float32; float64 stays float64).

    Raises:
        TypeError: if ``dtype`` is not a floating-point dtype.
    """
    if not dtype.is_floating_point:
        raise TypeError(f"feature maps need a floating-point tensor, got dtype {dtype}")
    return torch.promote_types(dtype, torch.float32)


def _as_scale(scale: Tensor | float, like: Tensor) -> Tensor | float:
    """Validate ``scale`` (> 0, finite) and move a tensor scale to ``like``'s device/dtype.

    A Python float is always validated.  A tensor scale is validated only when it lives
    on the CPU (checking a GPU tensor would force a device synchronisation in the edit
    hook of every layer); the editor validates its stored scales when it fits or loads.
    """
    if isinstance(scale, Tensor):
        if scale.device.type == "cpu" and not bool(torch.all(torch.isfinite(scale) & (scale > 0))):
            raise ValueError(f"feature-map scale must be finite and > 0, got {scale}")
        return scale.to(device=like.device, dtype=like.dtype)
    scale = float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"feature-map scale must be finite and > 0, got {scale}")
    return scale


@dataclass(frozen=True)
class FeatureMap:
    """An element-wise invertible feature map φ with its inverse.

    Attributes:
        name: a :class:`~spectral_edit.core.options.Feature` (a string naming one is
            accepted and canonicalised as by :func:`get_feature_map`).

    * ``linear``: φ(x) = x; the scale is ignored (Φ-SEA with linear φ is plain SEA).
    * ``tanh``: φ(x) = tanh(x); inverse atanh(clamp(y, −1 + ε, 1 − ε)).  Range of the
      round trip in float32: ``|x| ≲ 8.6·s`` (saturated values come back as
      ``±s·atanh(1 − ε)``).
    * ``elu``: φ(x) = x for x ≥ 0, exp(x) − 1 for x < 0; inverse y for y ≥ 0,
      log(1 + clamp(y, −1 + ε)) for y < 0.  Negative values below ``≈ −16.6·s`` (float32)
      saturate to that bound.
    * ``squared-exponential``: φ(x) = exp(−x²/2), not injective; its inverse is
      ``sign(h)·s·sqrt(−2 log(clamp(y, tiny, 1)))`` with the sign taken from the original
      activation ``h`` of the same token (sign(0) is taken as +1) and ``tiny`` the smallest
      normal number of the dtype (float32: magnitudes saturate at ``≈ 13.2·s``).
    """

    name: Feature

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", _feature(self.name))

    @property
    def is_identity(self) -> bool:
        """True for ``linear`` (forward and inverse return the input unchanged)."""
        return self.name is Feature.LINEAR

    @property
    def needs_reference(self) -> bool:
        """True when :meth:`inverse` needs the original activation (squared-exponential)."""
        return self.name is Feature.SQUARED_EXPONENTIAL

    def forward(self, x: Tensor, scale: Tensor | float) -> Tensor:
        """Apply φ_s(x) = φ(x / s) element-wise.

        Args:
            x: activations, shape ``(..., d)``, floating point.
            scale: ``s > 0``, a float or a tensor broadcastable to ``x``.

        Returns:
            Tensor of ``x``'s shape and dtype.  Ranges: tanh (−1, 1), elu (−1, ∞),
            squared-exponential (0, 1] (saturated values may round to the bounds).
        """
        if self.is_identity:
            return x
        work = x.to(compute_dtype(x.dtype))
        u = work / _as_scale(scale, work)
        if self.name is Feature.TANH:
            out = torch.tanh(u)
        elif self.name is Feature.ELU:
            out = torch.nn.functional.elu(u)
        else:  # squared-exponential
            out = torch.exp(-0.5 * u * u)
        return out.to(x.dtype)

    def clipped(self, u: Tensor) -> Tensor:
        """Mask of the scaled activations ``u = h / s`` (any shape) that the float32
        round trip ``φ⁻¹(φ(u))`` does not give back (relative error above 1e-3: in float32
        tanh beyond ``|u| ≈ 6.9``, elu below ``u ≈ −13.0``, squared-exponential beyond
        ``|u| ≈ 13.2``): an editor that uses this map moves those coordinates
        on every edited token, whatever its projections. All False for ``linear``."""
        if self.is_identity:
            return torch.zeros(u.shape, dtype=torch.bool, device=u.device)
        u32 = u.to(torch.float32)
        back = self.inverse(self.forward(u32, 1.0), 1.0, u32)
        return (back - u32).abs() > 1e-3 * u32.abs().clamp_min(1.0)

    def inverse(self, y: Tensor, scale: Tensor | float, reference: Tensor | None = None) -> Tensor:
        """Apply φ_s^{-1}(y) = s · φ^{-1}(y) element-wise, clamping ``y`` into φ's range.

        Args:
            y: feature values, shape ``(..., d)``, floating point (e.g. the edited ``z``,
                which may lie outside φ's range: it is clamped, so the result is finite
                for every finite ``y``).
            scale: ``s > 0``, a float or a tensor broadcastable to ``y``.
            reference: the original activation ``h`` of the same tokens, shape of ``y``;
                required by ``squared-exponential`` (for the sign), ignored otherwise.

        Returns:
            Tensor of ``y``'s shape and dtype.

        Raises:
            ValueError: squared-exponential without ``reference``, or a reference whose
                shape differs from ``y``.
        """
        if self.is_identity:
            return y
        if self.needs_reference:
            if reference is None:
                raise ValueError(
                    "the squared-exponential feature map is not injective: its inverse needs "
                    "`reference`, the original activation h of the same token (for the sign)"
                )
            if reference.shape != y.shape:
                raise ValueError(
                    f"reference shape {tuple(reference.shape)} != input shape {tuple(y.shape)}"
                )
        eps = clamp_margin(y.dtype)
        work = y.to(compute_dtype(y.dtype))
        s = _as_scale(scale, work)
        if self.name is Feature.TANH:
            out = torch.atanh(work.clamp(-1.0 + eps, 1.0 - eps))
        elif self.name is Feature.ELU:
            # torch.where evaluates both branches: clamping to [-1 + ε, 0] keeps the
            # log1p branch finite everywhere, including where it is not selected.
            neg = torch.log1p(work.clamp(min=-1.0 + eps, max=0.0))
            out = torch.where(work >= 0, work, neg)
        else:  # squared-exponential
            tiny = torch.finfo(y.dtype).tiny
            magnitude = torch.sqrt(-2.0 * torch.log(work.clamp(tiny, 1.0)))
            assert reference is not None  # checked above
            # sign(h), with sign(0) = sign(-0.0) = +1
            out = torch.where(reference.to(device=work.device) < 0, -magnitude, magnitude)
        return (out * s).to(y.dtype)


def _feature(name: str) -> Feature:
    """``name`` as a :class:`Feature` (case-insensitive, ``_`` read as ``-``)."""
    try:
        return Feature(name)
    except ValueError:
        valid = ", ".join(Feature.values())
        raise ValueError(f"unknown feature map {name!r}; valid names: {valid}") from None


def get_feature_map(name: str) -> FeatureMap:
    """Return the :class:`FeatureMap` called ``name``.

    ``name`` is matched case-insensitively and with ``_`` read as ``-`` (so
    ``"squared_exponential"`` works on a command line); the returned map carries the
    canonical :class:`~spectral_edit.core.options.Feature`.

    Raises:
        ValueError: for an unknown name; the message lists the valid names.
    """
    return FeatureMap(_feature(name))


def rms_scale(x: Tensor) -> float:
    """Root-mean-square of all elements of ``x``: ``sqrt(mean(x**2))``, in float64.

    This is the default fit-time scale ``s`` of a layer (``x``: its neutral activations,
    shape ``(N, d)`` or any shape; the mean runs over every element).

    Raises:
        ValueError: if ``x`` is empty, or the RMS is zero or not finite (no valid scale).
    """
    if x.numel() == 0:
        raise ValueError("rms_scale: empty tensor, the scale is undefined")
    value = float(torch.sqrt(torch.mean(x.detach().to(torch.float64) ** 2)))
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"rms_scale: RMS is {value}; a feature-map scale must be finite and > 0")
    return value
