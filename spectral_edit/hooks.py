"""The one hook machinery: forward hooks on named modules, always removed.

Decoder layers return either a tensor or a tuple whose first entry is the hidden state;
``hidden_of`` / ``with_hidden`` hide that difference. A hook function receives
``(key, hidden)`` and returns a replacement hidden state or ``None`` (observe only).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

HookFn = Callable[[Hashable, torch.Tensor], torch.Tensor | None]


def hidden_of(output: Any) -> torch.Tensor:
    """The hidden-state tensor inside a module's output (tensor or tuple/list)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot find a hidden-state tensor in module output of type {type(output)}")


def with_hidden(output: Any, hidden: torch.Tensor) -> Any:
    """``output`` with its hidden-state tensor replaced by ``hidden`` (same container type)."""
    if isinstance(output, torch.Tensor):
        return hidden
    return type(output)((hidden, *output[1:]))


class HookHandle:
    """Owns registered forward hooks; ``remove()`` (or leaving the ``with`` block) drops them.

    Removing is idempotent. After removal the model computes exactly what it computed
    before the hooks were added.
    """

    def __init__(self, handles: list[torch.utils.hooks.RemovableHandle]) -> None:
        self._handles = handles

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def __enter__(self) -> HookHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def add_hooks(modules: Mapping[Hashable, nn.Module], fn: HookFn) -> HookHandle:
    """Register ``fn`` as a forward hook on each module; keys are passed back to ``fn``.

    If registration fails midway, the hooks already added are removed before raising.
    """
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for key, module in modules.items():
            handles.append(module.register_forward_hook(_make_hook(key, fn)))
    except BaseException:
        HookHandle(handles).remove()
        raise
    return HookHandle(handles)


@contextmanager
def hooked(modules: Mapping[Hashable, nn.Module], fn: HookFn) -> Iterator[HookHandle]:
    """Context manager form of :func:`add_hooks`; hooks are removed even on error."""
    handle = add_hooks(modules, fn)
    try:
        yield handle
    finally:
        handle.remove()


def _make_hook(key: Hashable, fn: HookFn) -> Callable[[nn.Module, Any, Any], Any]:
    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        replacement = fn(key, hidden_of(output))
        if replacement is None:
            return None
        return with_hidden(output, replacement)

    return hook
