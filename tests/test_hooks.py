"""The hook machinery's three sites: output, input (pre-hook), input-output."""

import pytest
import torch
from torch import nn

from spectral_edit.hf.hooks import add_hooks, hooked


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))


def test_output_hook_replaces_output_and_is_removed():
    net, x = _net(), torch.randn(5, 4)
    before = net(x)
    with hooked({"a": net[2]}, lambda key, out: out + 1.0):
        torch.testing.assert_close(net(x), before + 1.0)
    assert torch.equal(net(x), before)


def test_input_hook_edits_the_first_positional_input():
    net, x = _net(), torch.randn(5, 4)
    before = net(x)
    seen = []
    with hooked(
        {"last": net[2]}, lambda key, h: seen.append(key) or torch.zeros_like(h), on="input"
    ):
        torch.testing.assert_close(net(x), net[2].bias.expand(5, 2))
    assert seen == ["last"]
    assert torch.equal(net(x), before)


def test_input_output_hook_sees_both():
    net, x = _net(), torch.randn(5, 4)
    before = net(x)
    delta = torch.randn(2, 3)

    def low_rank(key, out, inp):
        return out + inp @ delta.T

    handle = add_hooks({0: net[2]}, low_rank, on="input-output")
    hidden = net[1](net[0](x))
    torch.testing.assert_close(net(x), before + hidden @ delta.T)
    handle.remove()
    handle.remove()  # idempotent
    assert torch.equal(net(x), before)


def test_observe_only_returns_none_and_unknown_site_is_refused():
    net, x = _net(), torch.randn(5, 4)
    before = net(x)
    with hooked({0: net[0]}, lambda key, h: None, on="input"):
        assert torch.equal(net(x), before)
    with pytest.raises(ValueError, match="hook site"):
        add_hooks({0: net[0]}, lambda key, h: None, on="middle")


def test_hooks_are_removed_after_an_exception():
    net, x = _net(), torch.randn(5, 4)
    before = net(x)
    with pytest.raises(RuntimeError), hooked({0: net[0]}, lambda k, h: h * 2, on="input"):
        raise RuntimeError("boom")
    assert torch.equal(net(x), before)
