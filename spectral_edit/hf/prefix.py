"""Forward passes on top of the KV cache of tokens that many sequences share.

Demonstrations and benchmark prompts mostly start with the same tokens (the QA primer,
few-shot examples): those are run once, and every sequence continues from a copy of
their cache. The scorer, the capture and the generation all run through here:

- :func:`shared_prefix_length`: how many leading tokens all sequences share (capped so
  that no position a caller reads lies inside the prefix);
- :class:`PrefixCache`: the prefix's KV cache (built by running the base model once, no
  LM head), copied and repeated for each batch;
- :func:`forward_on_cache`: the base model on new tokens ``(B, T)`` after a cache of
  ``past_len`` real tokens, with positions counted over real tokens only, so that any
  padding of the new tokens gives the same hidden states as an uncached pass.

A sliding-window model counts its window over cache slots, not over real tokens, so a
cache is only shared where the longest sequence fits in the window, or where the new
tokens are right-padded (real tokens then sit in consecutive slots):
:func:`window_allows` says which.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

from .heads import decoder_and_head
from .layers import text_config
from .tokens import accepts_position_ids, cache_kwargs, check_length, input_device, output_cache

_REPLACING_LAYERS = (DynamicLayer, DynamicSlidingWindowLayer)
"""Cache layers whose updates and row selections assign new key/value tensors."""

MIN_SHARED_TOKENS = 8
"""A shared prefix shorter than this is not worth a cache copy per batch: run in full."""


def shared_prefix_length(
    sequences: Sequence[Sequence[int]], limits: Sequence[int] | None = None
) -> int:
    """The number of leading ids every sequence shares, at most ``limits[i]`` for each
    sequence ``i`` (e.g. the first position the caller reads, so that it is computed on
    top of the prefix, never inside it); 0 when it is shorter than
    :data:`MIN_SHARED_TOKENS` or there are fewer than two sequences."""
    if len(sequences) < 2:
        return 0
    first = sequences[0]
    length = min(len(s) for s in sequences)
    if limits:
        length = min([length, *limits])
    for n in range(max(length, 0)):
        token = first[n]
        if any(s[n] != token for s in sequences):
            length = n
            break
    return length if length >= MIN_SHARED_TOKENS else 0


def sliding_window(model: nn.Module) -> int | None:
    """The attention window of a sliding-window model (``sliding_window`` in its text
    config, unless ``use_sliding_window`` is false), else ``None``."""
    config = text_config(getattr(model, "config", None))
    window = getattr(config, "sliding_window", None)
    if getattr(config, "use_sliding_window", True) is False:
        return None
    return window if isinstance(window, int) and window > 0 else None


def window_allows(model: nn.Module, longest: int) -> bool:
    """Whether sequences of up to ``longest`` cache slots (prefix, padding and new tokens)
    attend exactly as in an unpadded pass: no sliding window, or one that holds them."""
    window = sliding_window(model)
    return window is None or longest <= window


def expand_cache(cache: object, rows: int) -> object:
    """A copy of ``cache`` (batch 1) repeated to ``rows`` rows; the original is unchanged.
    ``None`` (no prefix) stays ``None``."""
    if cache is None:
        return None
    cache = copy.deepcopy(cache)
    if rows > 1:
        cache.batch_repeat_interleave(rows)  # type: ignore[attr-defined]
    return cache


def select_cache_rows(cache: object, rows: torch.Tensor) -> object:
    """A copy of ``cache`` holding its rows ``rows`` (1-D indices, repeats allowed, in
    that order); the original is unchanged.

    The keys and values of transformers' dynamic layers (which replace, never write into,
    their tensors) are indexed straight from the original, not copied whole first."""
    layers = getattr(cache, "layers", None)
    memo: dict[int, object] = {}
    if isinstance(layers, list) and all(type(x) in _REPLACING_LAYERS for x in layers):
        for layer in layers:
            for name in ("keys", "values"):
                tensor = getattr(layer, name, None)
                if isinstance(tensor, torch.Tensor):
                    memo[id(tensor)] = tensor
    cache = copy.deepcopy(cache, memo)
    cache.batch_select_indices(rows)  # type: ignore[attr-defined]
    return cache


class _RoomyLayer(DynamicLayer):
    """A dynamic cache layer whose keys and values ``(B, heads, slots, head_dim)`` are
    views of buffers with free slots after them and free rows below them: an update
    writes its new slots in place (and doubles the buffers when they are full) instead of
    concatenating the whole cache once per step, as
    :class:`~transformers.cache_utils.DynamicLayer` does, and a row selection moves only
    the rows that change place. It holds what a dynamic layer holds, so
    attention and masks see the same keys, values and sizes."""

    def __init__(self, layer: DynamicLayer, room: int) -> None:
        super().__init__()
        self.is_sliding = layer.is_sliding  # the masks find the sliding layers by it
        keys, values = layer.keys, layer.values
        assert isinstance(keys, torch.Tensor) and isinstance(values, torch.Tensor)  # with_room
        self.rows, self.length = keys.shape[0], keys.shape[-2]
        self._keys = keys.new_empty((*keys.shape[:2], self.length + room, keys.shape[-1]))
        self._values = values.new_empty((*values.shape[:2], self.length + room, values.shape[-1]))
        self._keys[:, :, : self.length] = keys
        self._values[:, :, : self.length] = values
        self.device, self.is_initialized = keys.device, True
        self._expose()

    def _expose(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Point ``keys``/``values`` at the buffers' used rows and slots; returns them."""
        keys = self._keys[: self.rows, :, : self.length]
        values = self._values[: self.rows, :, : self.length]
        self.keys, self.values = keys, values
        return keys, values

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + key_states.shape[-2]
        if end > self._keys.shape[-2]:
            grow = max(end, 2 * self._keys.shape[-2]) - self._keys.shape[-2]
            self._keys = torch.nn.functional.pad(self._keys, (0, 0, 0, grow))
            self._values = torch.nn.functional.pad(self._values, (0, 0, 0, grow))
        self._keys[: self.rows, :, self.length : end] = key_states
        self._values[: self.rows, :, self.length : end] = value_states
        self.length = end
        return self._expose()

    def get_seq_length(self) -> int:
        return self.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Row ``i`` becomes row ``indices[i]``. Within the buffers' rows only the rows whose
        place changes are written (their sources are read first), so a drop that fills
        each hole from the end (:func:`~.generation.compact_order`) moves one row per
        hole; more rows than the buffers hold: new buffers."""
        index = indices.to(self._keys.device)
        if len(index) <= self._keys.shape[0]:
            moved = (index != torch.arange(len(index), device=index.device)).nonzero()[:, 0]
            if len(moved):
                sources = index[moved]
                for buffer in (self._keys, self._values):
                    buffer[moved, :, : self.length] = buffer[sources, :, : self.length]
        else:
            self._keys, self._values = self._keys[index], self._values[index]
        self.rows = len(index)
        self._expose()

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._keys = self._keys[: self.rows].repeat_interleave(repeats, dim=0)
        self._values = self._values[: self.rows].repeat_interleave(repeats, dim=0)
        self.rows *= repeats
        self._expose()

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes the negative number of slots to remove")
        self.length = max(self.length + tokens_to_remove, 0)
        self._expose()


def with_room(cache: object, room: int) -> object:
    """``cache`` (used up) made to grow by up to ``room`` slots without copying itself
    at every step: its dynamic layers become :class:`_RoomyLayer` s, where every layer is
    a dynamic one and no sliding window would drop a slot before ``room`` more are added
    (a sliding layer then holds all its slots, as a full one does). Otherwise ``cache``
    as it is."""
    layers = getattr(cache, "layers", None)
    if not isinstance(layers, list) or not layers:
        return cache
    for layer in layers:
        if type(layer) not in _REPLACING_LAYERS or not isinstance(layer.keys, torch.Tensor):
            return cache
        if layer.keys.ndim != 4 or layer.values.shape != layer.keys.shape:
            return cache
        if isinstance(layer, DynamicSlidingWindowLayer):
            if layer.cumulative_length != layer.keys.shape[-2]:
                return cache  # the window already dropped slots
            if layer.cumulative_length + room >= layer.sliding_window:
                return cache
    cache.layers = [_RoomyLayer(layer, room) for layer in layers]  # type: ignore[attr-defined]
    return cache


def forward_on_cache(
    base: nn.Module,
    ids: torch.Tensor,
    mask: torch.Tensor,
    past: object,
    past_len: int,
    *,
    past_mask: torch.Tensor | None = None,
    output_hidden_states: bool = False,
    use_cache: bool = True,
):
    """The base model on ``ids``/``mask`` ``(B, T)`` after ``past``: a cache of
    ``past_len`` slots per row (``None`` with ``past_len = 0``), all real tokens unless
    ``past_mask`` ``(B, past_len)`` marks padding among them.

    Positions count the real tokens of each row over the cache and the new tokens, so
    left, right or inner padding leaves real tokens' states unchanged. Returns the model
    output (``last_hidden_state`` ``(B, T, d)``, the cache unless ``use_cache`` is false,
    and the hidden states when asked)."""
    batch, width = ids.shape
    check_length(base, past_len + width)
    device = input_device(base)
    if past_mask is None:
        past_mask = torch.ones(batch, past_len, dtype=mask.dtype)
    full_mask = torch.cat([past_mask.to(mask.dtype), mask], dim=1)
    kwargs = {
        "input_ids": ids.to(device),
        "attention_mask": full_mask.to(device),
        "use_cache": use_cache,
        **cache_kwargs(base, past),
    }
    if accepts_position_ids(base):
        positions = (full_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past_len:]
        kwargs["position_ids"] = positions.to(device)
    if output_hidden_states:
        kwargs["output_hidden_states"] = True
    return base(**kwargs)


def _key_values(cache: object) -> list[tuple[object, torch.Tensor, torch.Tensor]] | None:
    """(layer, keys, values) of each layer of a per-layer key/value cache whose tensors
    ``(B, heads, slots, head_dim)`` hold every slot, else ``None``."""
    layers = getattr(cache, "layers", None)
    if not isinstance(layers, list) or not layers:
        return None
    found = []
    for layer in layers:
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if not (isinstance(keys, torch.Tensor) and isinstance(values, torch.Tensor)):
            return None
        if keys.ndim != 4 or keys.shape != values.shape:
            return None
        found.append((layer, keys, values))
    return found


def merge_caches(caches: Sequence[object], widths: Sequence[int]) -> object | None:
    """One cache holding the rows of ``caches`` (cache ``i`` has ``widths[i]`` slots),
    each padded at its end to the widest; the caller masks the padded slots. ``None``
    where a cache is not a per-layer key/value cache holding all its slots (e.g. one a
    sliding window has trimmed): the caller then decodes the caches one by one. The
    first cache is reused as the container."""
    found = [_key_values(cache) for cache in caches]
    if not caches or any(f is None or len(f) != len(found[0] or []) for f in found):
        return None
    parts = [f for f in found if f is not None]
    if any(k.shape[-2] != slots for f, slots in zip(parts, widths, strict=True) for _, k, _ in f):
        return None
    width = max(widths)
    for index, (layer, _, _) in enumerate(parts[0]):
        for name, which in (("keys", 1), ("values", 2)):
            padded = [
                torch.nn.functional.pad(f[index][which], (0, 0, 0, width - slots))  # type: ignore[arg-type]
                for f, slots in zip(parts, widths, strict=True)
            ]
            setattr(layer, name, torch.cat(padded, dim=0))
        if hasattr(layer, "cumulative_length"):  # a sliding-window layer's slot count
            layer.cumulative_length = width
    return caches[0]


@dataclass
class PrefixCache:
    """The KV cache of shared prefix ``ids`` (batch 1), and the features of its last
    position ``last`` (:meth:`build`: the final hidden state ``(1, d)``; the scorer keeps
    its readout's features there); empty ids hold no cache (every pass runs in full)."""

    ids: list[int]
    cache: object = None
    last: torch.Tensor | None = None

    @classmethod
    def build(cls, model: nn.Module, ids: Sequence[int]) -> PrefixCache:
        """Run ``model``'s base model (never its LM head) once over ``ids``."""
        ids = list(ids)
        if not ids:
            return cls([])
        base, _ = decoder_and_head(model)
        out = forward_on_cache(
            base, torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), None, 0
        )
        return cls(ids, output_cache(out), out.last_hidden_state[:, -1])

    def __len__(self) -> int:
        return len(self.ids)

    def split(self, ids: list[int]) -> tuple[bool, list[int]]:
        """Whether ``ids`` start with the prefix and go on after it, and the ids after it
        (or all of them, for a sequence that does not)."""
        shared = bool(self.ids) and len(ids) > len(self.ids) and ids[: len(self.ids)] == self.ids
        return shared, ids[len(self.ids) :] if shared else ids

    def expanded(self, rows: int) -> object:
        """A fresh copy of the cache for a batch of ``rows`` (``None`` when empty)."""
        return expand_cache(self.cache, rows)
