"""A decoding cache with room (:func:`spectral_edit.hf.prefix.with_room`) gives the same
states as transformers' dynamic cache, through growth past its room, row selections in
order, reordered and repeated, on every tiny architecture."""

import copy

import pytest
import torch
from transformers.cache_utils import DynamicSlidingWindowLayer

from spectral_edit.hf.generation import compact_order
from spectral_edit.hf.heads import decoder_and_head
from spectral_edit.hf.prefix import _RoomyLayer, forward_on_cache, sliding_window, with_room
from spectral_edit.hf.tokens import output_cache

from .tiny_models import TINY_ARCHS, make_tiny_model

STEPS = [None, None, torch.tensor([0, 3, 2]), None, torch.tensor([2, 0]), None]
"""Before each step, the rows kept (``None``: all): a drop whose hole takes the last row
(:func:`compact_order` of rows 0, 2, 3), then a reorder with a drop; steps past a room of
2 slots make the buffers grow."""


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_a_cache_with_room_gives_the_dynamic_cache_states(arch):
    model = make_tiny_model(arch)
    base, _ = decoder_and_head(model)
    generator = torch.Generator().manual_seed(0)
    window = sliding_window(model)  # tiny Gemma 3's is 8 slots: a short prompt
    width = 9 if window is None or window > 9 + len(STEPS) else window - len(STEPS) - 1
    ids = torch.randint(5, 200, (4, width), generator=generator)
    with torch.no_grad():
        first = output_cache(forward_on_cache(base, ids, torch.ones_like(ids), None, 0))
        plain, roomy = first, with_room(copy.deepcopy(first), 2)
        assert all(type(layer) is _RoomyLayer for layer in roomy.layers)
        rows = ids.shape[0]
        for keep in STEPS:
            if keep is not None:
                plain.batch_select_indices(keep)
                buffers = [layer._keys for layer in roomy.layers]
                roomy.batch_select_indices(keep)
                # rows are moved inside the buffers, never copied to new ones
                assert all(layer._keys is b for layer, b in zip(roomy.layers, buffers, strict=True))
                rows = len(keep)
            step = torch.randint(5, 200, (rows, 1), generator=generator)
            mask = torch.ones_like(step)
            a = forward_on_cache(base, step, mask, plain, width)
            b = forward_on_cache(base, step, mask, roomy, width)
            torch.testing.assert_close(b.last_hidden_state, a.last_hidden_state, atol=0, rtol=0)
            plain, roomy, width = output_cache(a), output_cache(b), width + 1
            for left, right in zip(plain.layers, roomy.layers, strict=True):
                assert torch.equal(left.keys, right.keys)
                assert torch.equal(left.values, right.values)
                assert left.get_seq_length() == right.get_seq_length() == width
        roomy.batch_select_indices(torch.tensor([1, 1]))  # repeats, in place
        plain.batch_select_indices(torch.tensor([1, 1]))
        assert all(
            torch.equal(p.keys, r.keys) for p, r in zip(plain.layers, roomy.layers, strict=True)
        )
        roomy.batch_select_indices(torch.tensor([0, 1, 0, 1, 1]))  # more rows: new buffers
        plain.batch_select_indices(torch.tensor([0, 1, 0, 1, 1]))
        assert all(
            torch.equal(p.keys, r.keys) for p, r in zip(plain.layers, roomy.layers, strict=True)
        )


def test_no_room_where_a_sliding_window_would_drop_slots():
    model = make_tiny_model("gemma3")
    window = sliding_window(model)
    assert window is not None
    base, _ = decoder_and_head(model)
    ids = torch.randint(5, 200, (2, window - 4))
    with torch.no_grad():
        cache = output_cache(forward_on_cache(base, ids, torch.ones_like(ids), None, 0))
    kinds = [type(layer) for layer in cache.layers]
    assert DynamicSlidingWindowLayer in kinds
    assert with_room(cache, 8) is cache and [type(x) for x in cache.layers] == kinds
    assert all(type(x) is _RoomyLayer for x in with_room(cache, 2).layers)


def test_compact_order_fills_each_hole_from_the_end():
    assert compact_order([0, 2, 3]) == [0, 3, 2]  # STEPS' first drop
    assert compact_order([0, 2, 3, 5]) == [0, 5, 2, 3]
    assert compact_order([0, 1, 2]) == [0, 1, 2]
    assert compact_order([4, 5, 6]) == [6, 5, 4]
    for keep in ([1, 3, 4, 7, 8, 9], [0, 9], list(range(1, 10, 2))):
        order = compact_order(keep)
        assert sorted(order) == keep
        moved = sum(row != at for at, row in enumerate(order))
        assert moved == sum(row >= len(keep) for row in keep)  # one per hole
