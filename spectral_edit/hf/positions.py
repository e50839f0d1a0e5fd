"""Which positions of a forward pass an edit acts on.

A position-restricted edit (:class:`~spectral_edit.core.options.Positions` ``answer`` or
``generated``) needs two facts about the current forward pass:

- the **prompt boundary** of each batch row: how many real tokens its prompt has. The
  scorer and the generation set it around their forward passes with
  :func:`prompt_boundary`; a caller running the model itself can do the same. Without a
  boundary every position counts as after the prompt (the whole input is treated as
  generated text, e.g. the neutral texts of the KL measure), so the edit acts everywhere;
- the **real-token index** of each position of the current call, so that left or right
  padding and a KV cache give the same indices as an uncached pass over the same tokens:
  the ``position_ids`` the base model is given (generation and the scorer count them over
  real tokens), else the count over the 2-D attention mask of the whole sequence (cache
  included), else the cache positions, else ``0..T-1``. :class:`PositionTracker` records
  them from the base model's keyword arguments with a forward pre-hook.

The boundary lives in a :class:`~contextvars.ContextVar` (per thread and task, restored
on exit); no module or class state is mutated otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch import nn

from ..core.options import Positions
from .heads import decoder_and_head
from .hooks import HookHandle

_BOUNDARY: ContextVar[tuple[int, ...] | None] = ContextVar(
    "spectral_edit_prompt_boundary", default=None
)


@contextmanager
def prompt_boundary(lengths: Sequence[int]) -> Iterator[None]:
    """Within the block, row ``b`` of each forward pass has a prompt of ``lengths[b]``
    real tokens (one length applies to every row)."""
    values = tuple(int(n) for n in lengths)
    if not values or any(n < 0 for n in values):
        raise ValueError(f"prompt lengths must be non-negative integers, got {values}")
    token = _BOUNDARY.set(values)
    try:
        yield
    finally:
        _BOUNDARY.reset(token)


def current_boundary() -> tuple[int, ...] | None:
    """The prompt lengths set by the innermost :func:`prompt_boundary`, or ``None``."""
    return _BOUNDARY.get()


def real_token_index(mask: torch.Tensor, width: int) -> torch.Tensor:
    """``(B, width)`` index of each of the last ``width`` positions among the real tokens
    of its row (``mask`` ``(B, P + width)``, 1 = real); padding positions before the
    first real token get ``-1``."""
    counts = mask.long().cumsum(dim=1) - 1
    return counts[:, -width:]


def editable(index: torch.Tensor, lengths: Sequence[int], mode: Positions) -> torch.Tensor:
    """``(B, T)`` bool: which positions of real-token ``index`` ``(B, T)`` ``mode`` edits,
    given per-row prompt ``lengths`` (one or ``B`` of them)."""
    batch = index.shape[0]
    if len(lengths) not in (1, batch):
        raise ValueError(f"{len(lengths)} prompt lengths for a batch of {batch} rows")
    bound = torch.tensor(lengths, device=index.device).view(-1, 1)
    if mode is Positions.ANSWER:
        bound = bound - 1
    elif mode is not Positions.GENERATED:
        return torch.ones_like(index, dtype=torch.bool)
    return index >= bound


class PositionTracker:
    """Records the real-token positions of the base model's current forward call.

    ``attach(model)`` registers a forward pre-hook (with keyword arguments) on the base
    model; :meth:`index` then gives the ``(B, T)`` real-token index of the hidden states
    a decoder layer sees during that call.
    """

    def __init__(self) -> None:
        self._positions: torch.Tensor | None = None
        self._mask: torch.Tensor | None = None
        self._cache_position: torch.Tensor | None = None

    def attach(self, model: nn.Module) -> HookHandle:
        base, _ = decoder_and_head(model)

        def tensor(value: Any) -> torch.Tensor | None:
            return value if isinstance(value, torch.Tensor) else None

        def before(module: nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
            self._positions = tensor(kwargs.get("position_ids"))
            self._mask = tensor(kwargs.get("attention_mask"))
            self._cache_position = tensor(kwargs.get("cache_position"))
            if self._positions is None and self._mask is not None and self._mask.ndim != 2:
                raise ValueError(
                    "a position-restricted edit needs position_ids or a 2-D attention mask "
                    f"(batch, length), got a mask of shape {tuple(self._mask.shape)}"
                )

        def after(module: nn.Module, args: Any, output: Any) -> None:
            self._positions = self._mask = self._cache_position = None

        handles = [
            base.register_forward_pre_hook(before, with_kwargs=True),
            base.register_forward_hook(after, always_call=True),
        ]
        return HookHandle(handles)

    def index(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` real-token index of ``hidden`` ``(B, T, d)`` in the current call."""
        batch, width = hidden.shape[0], hidden.shape[1]
        if self._positions is not None:
            positions = self._positions.to(hidden.device)
            if positions.ndim == 3:  # multimodal rotary (3, B, T): the text positions
                positions = positions[0]
            return positions[..., -width:].expand(batch, width)
        if self._mask is not None:
            return real_token_index(self._mask.to(hidden.device), width)
        if self._cache_position is not None:
            return self._cache_position.to(hidden.device)[-width:].expand(batch, width)
        return torch.arange(width, device=hidden.device).expand(batch, width)

    def keep_mask(self, hidden: torch.Tensor, mode: Positions) -> torch.Tensor | None:
        """``(B, T, 1)`` bool of the positions ``mode`` edits, or ``None`` for all."""
        lengths = current_boundary()
        if mode is Positions.ALL or lengths is None:
            return None
        return editable(self.index(hidden), lengths, mode).unsqueeze(-1)
