"""The one hook machinery: forward hooks on named modules, always removed.

Decoder layers return either a tensor or a tuple whose first entry is the hidden state;
``hidden_of`` / ``with_hidden`` hide that difference. A hook function receives
``(key, hidden)`` and returns a replacement hidden state or ``None`` (observe only).

Where the hook acts (``on``):

- ``"output"``: ``fn(key, output_hidden)`` may replace the module's output;
- ``"input"``: ``fn(key, input_hidden)`` may replace the module's first positional input
  (a forward pre-hook; e.g. the concatenated head outputs entering an attention output
  projection);
- ``"input-output"``: ``fn(key, output_hidden, input_hidden)`` may replace the output,
  knowing the input (e.g. a low-rank weight delta ``out + B A x``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal, TypeVar, get_args

import torch
from torch import nn

HookFn = Callable[..., torch.Tensor | None]
HookSite = Literal["output", "input", "input-output"]
"""Where a hook acts on its module (see the module docstring)."""

K = TypeVar("K", bound=Hashable)
"""The key type of a module mapping (a layer index, a name, ...), passed back to hooks."""


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

    @classmethod
    def join(cls, *handles: HookHandle) -> HookHandle:
        """One handle owning the hooks of ``handles`` (which give them up)."""
        owned: list[torch.utils.hooks.RemovableHandle] = []
        for handle in handles:
            owned.extend(handle._handles)
            handle._handles = []
        return cls(owned)

    def __enter__(self) -> HookHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def add_hooks(modules: Mapping[K, nn.Module], fn: HookFn, *, on: HookSite = "output") -> HookHandle:
    """Register ``fn`` on each module (see the module docstring for ``on``); keys are
    passed back to ``fn``.

    If registration fails midway, the hooks already added are removed before raising.
    """
    if on not in get_args(HookSite):
        raise ValueError(f"hook site must be one of {get_args(HookSite)}, not {on!r}")
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for key, module in modules.items():
            if on == "input":
                handles.append(module.register_forward_pre_hook(_make_pre_hook(key, fn)))
            else:
                hook = _make_hook(key, fn, pass_input=on == "input-output")
                handles.append(module.register_forward_hook(hook))
    except BaseException:
        HookHandle(handles).remove()
        raise
    return HookHandle(handles)


@contextmanager
def hooked(
    modules: Mapping[K, nn.Module], fn: HookFn, *, on: HookSite = "output"
) -> Iterator[HookHandle]:
    """Context manager form of :func:`add_hooks`; hooks are removed even on error."""
    handle = add_hooks(modules, fn, on=on)
    try:
        yield handle
    finally:
        handle.remove()


def _make_hook(
    key: Hashable, fn: HookFn, *, pass_input: bool = False
) -> Callable[[nn.Module, Any, Any], Any]:
    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        hidden = hidden_of(output)
        replacement = fn(key, hidden, hidden_of(args)) if pass_input else fn(key, hidden)
        if replacement is None:
            return None
        return with_hidden(output, replacement)

    return hook


def _make_pre_hook(key: Hashable, fn: HookFn) -> Callable[[nn.Module, Any], Any]:
    def pre_hook(module: nn.Module, args: Any) -> Any:
        if not args:
            raise TypeError(f"{type(module).__name__} got no positional input to edit")
        replacement = fn(key, hidden_of(args))
        if replacement is None:
            return None
        return with_hidden(tuple(args), replacement)

    return pre_hook
