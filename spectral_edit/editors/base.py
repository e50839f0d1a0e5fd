"""What every editor (SEA and the baselines) shares: checking it fits a model, and
applying a per-layer edit through the one hook machinery, persistently or in a block."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..hf.hooks import HookFn, HookHandle, HookSite, add_hooks
from ..hf.layers import site_modules
from .file_format import check_fits


class EditorBase:
    """Mixin for frozen editor dataclasses with ``hidden_size``, ``num_layers``, ``site``
    and ``layer_path`` fields; subclasses implement :meth:`attach` with :meth:`_hook`."""

    hidden_size: int
    num_layers: int
    site: str
    layer_path: str | None

    def check_model(self, model: nn.Module) -> None:
        """Raise :class:`EditorFileError` if the editor does not fit ``model``."""
        check_fits(model, self.hidden_size, self.num_layers, self.layer_path)

    def _hook(
        self,
        model: nn.Module,
        layers: Sequence[int],
        edit: Callable[[int, torch.Tensor], torch.Tensor],
    ) -> HookHandle:
        """Check the model, then apply ``edit(layer, hidden)`` at each layer's site."""
        self.check_model(model)
        return add_hooks(site_modules(model, layers, self.site, self.layer_path), edit)

    def _hook_modules(
        self,
        model: nn.Module,
        modules: Callable[[], Mapping[Hashable, nn.Module]],
        fn: HookFn,
        *,
        on: HookSite = "output",
    ) -> HookHandle:
        """Check the model, then hook the modules ``modules()`` locates (see
        :func:`~spectral_edit.hf.hooks.add_hooks` for ``on``)."""
        self.check_model(model)
        return add_hooks(modules(), fn, on=on)

    def attach(self, model: nn.Module) -> HookHandle:  # pragma: no cover - abstract
        raise NotImplementedError

    @contextlib.contextmanager
    def apply(self, model: nn.Module) -> Iterator[nn.Module]:
        """``with editor.apply(model): ...`` edits the model inside the block only; the
        hooks are removed on exit, also after an exception."""
        with self.attach(model):
            yield model
