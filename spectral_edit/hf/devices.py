"""Where a module computes, also on a model dispatched by accelerate (``device_map`` with
layers spread over devices, CPU or disk offload).

A dispatched model's offloaded weights are on the ``meta`` device between forward passes:
accelerate's ``AlignDevicesHook`` (``module._hf_hook``) loads them onto the module's
*execution device* for its forward pass and moves its inputs there. :func:`execution_device`
reads that device, so that tensors the library feeds a module directly (input ids to the
embeddings, final hidden states to the LM head) go where the module runs; the hooks of
:mod:`~spectral_edit.hf.hooks` need nothing of it, since they see each layer's tensors
on its execution device and the editors place their factors on the device of the tensor
they edit.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

__all__ = ["execution_device"]


def _hook_device(hook: object) -> torch.device | None:
    """The execution device an accelerate hook (or a ``SequentialHook`` of hooks) sets."""
    if hook is None:
        return None
    for inner in getattr(hook, "hooks", ()) or ():
        found = _hook_device(inner)
        if found is not None:
            return found
    device = getattr(hook, "execution_device", None)
    if device is None:
        return None
    return torch.device(device)  # accelerate may store a CUDA index as an int


def execution_device(module: nn.Module) -> torch.device:
    """The device ``module`` computes on: its accelerate hook's execution device (the
    first found on it or its submodules, in ``modules()`` order) where it was dispatched,
    else the device of its first parameter or buffer not on ``meta``, else the CPU."""
    for sub in module.modules():
        found = _hook_device(getattr(sub, "_hf_hook", None))
        if found is not None:
            return found
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        if tensor.device.type != "meta":
            return tensor.device
    return torch.device("cpu")
