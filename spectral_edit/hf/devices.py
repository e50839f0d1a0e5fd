"""Where a module computes, also on a model dispatched by accelerate (``device_map`` with
layers spread over devices, CPU or disk offload).

A dispatched model's offloaded weights are on the ``meta`` device between forward passes:
accelerate's ``AlignDevicesHook`` (``module._hf_hook``) loads them onto the module's
*execution device* for its forward pass and moves its inputs there. :func:`execution_device`
reads that device, so that tensors the library feeds a module directly (input ids to the
embeddings, final hidden states to the LM head) go where the module runs; the hooks of
:mod:`~spectral_edit.hf.hooks` need nothing of it, since they see each layer's tensors
on its execution device and the editors place their factors on the device of the tensor
they edit. :func:`onloaded` brings offloaded weights into memory for the one job that
reads every weight rather than running the model (export).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator

import torch
from torch import nn

__all__ = ["execution_device", "offload_hooks", "onloaded"]


def _find_hook(hook: object, accepts: Callable[[object], bool]) -> object | None:
    """The first accelerate hook that ``accepts``: ``hook`` itself, or one of a
    ``SequentialHook``'s hooks (searched first, depth first)."""
    if hook is None:
        return None
    for inner in getattr(hook, "hooks", ()) or ():
        found = _find_hook(inner, accepts)
        if found is not None:
            return found
    return hook if accepts(hook) else None


def _hook_device(hook: object) -> torch.device | None:
    """The execution device an accelerate hook (or a ``SequentialHook`` of hooks) sets."""
    found = _find_hook(hook, lambda h: getattr(h, "execution_device", None) is not None)
    if found is None:
        return None
    # accelerate may store a CUDA index as an int
    return torch.device(found.execution_device)  # type: ignore[attr-defined]


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


def _offload_hook(hook: object) -> object | None:
    """The accelerate ``AlignDevicesHook`` with ``offload`` set in ``hook`` (itself, or one
    of a ``SequentialHook``'s hooks), if any."""
    return _find_hook(
        hook,
        lambda h: (
            bool(getattr(h, "offload", False)) and getattr(h, "weights_map", None) is not None
        ),
    )


def offload_hooks(model: nn.Module) -> list[tuple[nn.Module, object]]:
    """``(module, hook)`` for every module of ``model`` whose weights accelerate offloads
    (CPU or disk; on ``meta`` between forward passes), in ``modules()`` order; empty for
    a model in memory or dispatched without offload."""
    found = []
    for module in model.modules():
        hook = _offload_hook(getattr(module, "_hf_hook", None))
        if hook is not None:
            found.append((module, hook))
    return found


@contextlib.contextmanager
def onloaded(model: nn.Module, device: torch.device | str = "cpu") -> Iterator[nn.Module]:
    """``model`` with every offloaded weight loaded onto ``device`` inside the block (what
    accelerate's hook does for one module's forward pass, for all of them at once), and
    offloaded again after it: ``model.state_dict()`` and every weight read inside hold real
    values. Needs the whole model's weights in ``device``'s memory; a model without
    offloaded weights is yielded as it is."""
    target = torch.device(device)
    hooks = offload_hooks(model)
    done: list[tuple[nn.Module, object, object]] = []
    try:
        for module, hook in hooks:
            before = getattr(hook, "execution_device", None)
            hook.execution_device = target  # type: ignore[attr-defined]
            done.append((module, hook, before))
            hook.pre_forward(module)  # type: ignore[attr-defined]
            # a forward pass inside the block (a probe) must not offload the weights again
            hook.offload = False  # type: ignore[attr-defined]
        yield model
    finally:
        for module, hook, before in reversed(done):
            hook.offload = True  # type: ignore[attr-defined]
            try:
                hook.post_forward(module, None)  # type: ignore[attr-defined]
            finally:
                hook.execution_device = before  # type: ignore[attr-defined]
