"""LoRA adapters as an editor: the training-based reference the inference-time editors
compare with.

:meth:`LoRAEditor.train` fine-tunes low-rank adapters with ``peft`` on a copy of the model
(see :mod:`.lora_train`; the user's model is never modified) and exports them as plain
tensors per adapted linear module, keyed by its dotted name in the original model:
``A`` ``(r, in)``, ``B`` ``(out, r)`` and ``scaling = lora_alpha / r``. At inference no
``peft`` is involved: a forward hook adds ``α · scaling · B A x`` to each module's output
(``x @ A.T @ B.T``, so GPT-2's transposed ``Conv1D`` weights need no special case: LoRA
acts on the module's input and output, not on its weight layout). ``α = 0`` is the
unedited model, bit for bit; ``α = 1`` computes exactly what the ``peft`` model computes.

File format ``spectral-edit/lora`` version 1: tensors ``{module}.lora_A`` and
``{module}.lora_B`` (float32), the module names and scalings in the header. Files written
before LoRA editors lost their meaningless ``site`` field still load (it is ignored).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from ...demos.format import Demonstration
from ...demos.prompts import PLAIN, PromptFormat
from ...hf.hooks import HookHandle
from ...hf.layers import find_decoder_layers, hidden_size_of, linear_dims
from ..base import EditorBase
from ..file_format import EDITOR_FIELDS, EditorFileError, EditorFormat, TensorField
from .lora_train import lora_target_modules, train_lora_copy

if TYPE_CHECKING:
    from peft import PeftModel


@dataclasses.dataclass(frozen=True)
class LoRAEditor(EditorBase):
    """Immutable LoRA adapters applied by hooks: ``out + α · scaling · B (A x)``.

    ``modules[i]`` is a linear layer's dotted name in the original model, ``lora_A[i]``
    is ``(r, in)``, ``lora_B[i]`` is ``(out, r)`` and ``scalings[i]`` is
    ``lora_alpha / r``; ``hidden_size``, ``num_layers`` and ``layer_path`` identify the
    model the adapters fit.
    """

    modules: tuple[str, ...]
    lora_A: tuple[torch.Tensor, ...]
    lora_B: tuple[torch.Tensor, ...]
    scalings: tuple[float, ...]
    hidden_size: int
    num_layers: int
    alpha: float = 1.0
    layer_path: str | None = None
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    FORMAT = EditorFormat(
        "spectral-edit/lora",
        1,
        header=("modules", "scalings", *EDITOR_FIELDS),
        tensors=(
            TensorField("lora_A", "{}.lora_A", per="modules"),
            TensorField("lora_B", "{}.lora_B", per="modules"),
        ),
    )

    def __post_init__(self) -> None:
        count = len(self.modules)
        if count == 0:
            raise ValueError("a LoRA editor needs at least one module")
        if not len(self.lora_A) == len(self.lora_B) == len(self.scalings) == count:
            raise ValueError("one A, one B and one scaling are needed per module")
        if len(set(self.modules)) != count:
            raise ValueError("module names must be unique")
        for name, a, b, scaling in zip(
            self.modules, self.lora_A, self.lora_B, self.scalings, strict=True
        ):
            if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1] or a.shape[0] < 1:
                raise ValueError(
                    f"{name}: factors must be A (r, in) and B (out, r), got A "
                    f"{tuple(a.shape)} and B {tuple(b.shape)}"
                )
            if not (a.is_floating_point() and b.is_floating_point()):
                raise ValueError(f"{name}: LoRA factors must be floating point")
            if not math.isfinite(scaling):
                raise ValueError(f"{name}: scaling must be finite, got {scaling}")
        self._check_alpha()
        if self.hidden_size < 1 or self.num_layers < 1:
            raise ValueError("hidden_size and num_layers must be positive")

    @classmethod
    def train(
        cls,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        demos: Sequence[Demonstration],
        *,
        rank: int = 8,
        lora_alpha: float = 16,
        targets: Sequence[str] | None = None,
        layers: str | int | Sequence[int] | None = None,
        steps: int = 100,
        lr: float = 1e-4,
        batch_size: int = 8,
        seed: int = 0,
        layer_path: str | None = None,
        progress: bool | str = False,
        prompt_format: PromptFormat = PLAIN,
    ) -> LoRAEditor:
        """Fine-tune LoRA adapters on the positive answers (see :func:`train_lora_copy`)
        on a copy of ``model`` and export them; ``model`` is left unchanged.

        ``targets``: module names inside a decoder layer (default: the attention query
        and value projections); ``layers``: decoder layers to adapt (default: all).
        ``prompt_format``: plain prompts or a chat template (recorded, like SEA's).
        ``metadata`` records the settings, the per-step training loss and the seconds.
        """
        modules = lora_target_modules(model, targets=targets, layers=layers, layer_path=layer_path)
        start = time.perf_counter()
        peft_model, losses = train_lora_copy(
            model,
            tokenizer,
            demos,
            modules,
            rank=rank,
            lora_alpha=lora_alpha,
            steps=steps,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
            progress=progress,
            prompt_format=prompt_format,
        )
        seconds = time.perf_counter() - start
        metadata = {
            "n_demonstrations": len(demos),
            "rank": rank,
            "lora_alpha": lora_alpha,
            "steps": steps,
            "lr": lr,
            "batch_size": batch_size,
            "seed": seed,
            "loss_curve": losses,
            "train_seconds": seconds,
            **prompt_format.record(),
        }
        return cls.from_peft(peft_model, modules, layer_path=layer_path, metadata=metadata)

    @classmethod
    def from_peft(
        cls,
        peft_model: PeftModel,
        modules: Sequence[str],
        *,
        layer_path: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> LoRAEditor:
        """Export the active vanilla-LoRA adapter of ``peft_model`` on ``modules`` (dotted
        names in the wrapped, original model) as float32 CPU factors."""
        base = peft_model.get_base_model()
        adapter = peft_model.active_adapter
        factors_a, factors_b, scalings = [], [], []
        for name in modules:
            # a peft LoraLayer: its adapter dicts are attributes torch's typing cannot see
            layer: Any = base.get_submodule(name)
            if adapter not in getattr(layer, "lora_A", {}):
                raise ValueError(f"{name} has no LoRA adapter {adapter!r}")
            if adapter in getattr(layer, "lora_variant", {}) or layer.lora_bias.get(adapter):
                raise ValueError(f"{name}: only vanilla LoRA (no DoRA, no bias) can be exported")
            factors_a.append(layer.lora_A[adapter].weight.detach().to("cpu", torch.float32))
            factors_b.append(layer.lora_B[adapter].weight.detach().to("cpu", torch.float32))
            scalings.append(float(layer.scaling[adapter]))
        return cls(
            modules=tuple(modules),
            lora_A=tuple(a.clone() for a in factors_a),
            lora_B=tuple(b.clone() for b in factors_b),
            scalings=tuple(scalings),
            hidden_size=hidden_size_of(base),
            num_layers=len(find_decoder_layers(base, layer_path)),
            layer_path=layer_path,
            metadata=dict(metadata or {}),
        )

    def with_options(self, *, alpha: float | None = None) -> LoRAEditor:
        """A copy with another strength ``α`` (the factor on every adapter's delta)."""
        return self if alpha is None else dataclasses.replace(self, alpha=float(alpha))

    def locate(self, model: nn.Module) -> dict[str, nn.Module]:
        """The adapted linear layers of ``model`` by name; :class:`EditorFileError` if one
        is missing or its ``(in, out)`` does not match its factors."""
        found: dict[str, nn.Module] = {}
        for name, a, b in zip(self.modules, self.lora_A, self.lora_B, strict=True):
            try:
                module = model.get_submodule(name)
            except AttributeError as error:
                raise EditorFileError(
                    f"LoRA editor adapts {name!r}, which is not a linear layer of "
                    f"{type(model).__name__} ({error})"
                ) from error
            dims = linear_dims(module)
            if dims is None:
                raise EditorFileError(
                    f"LoRA editor adapts {name!r}, which is not a linear layer of "
                    f"{type(model).__name__} ({type(module).__name__} is not a linear layer "
                    "(nn.Linear or Conv1D))"
                )
            if dims != (a.shape[1], b.shape[0]):
                raise EditorFileError(
                    f"LoRA factors of {name!r} are for (in, out) = "
                    f"{(a.shape[1], b.shape[0])}, the model's layer is {dims}"
                )
            found[name] = module
        return found

    def check_model(self, model: nn.Module) -> None:
        """Raise :class:`EditorFileError` unless width and layer count fit ``model`` and
        every adapted module is a linear layer of it with the factors' ``(in, out)``."""
        super().check_model(model)
        self.locate(model)

    def attach(self, model: nn.Module) -> HookHandle:
        """Add the adapters' deltas to ``model`` until ``handle.remove()``; the factors
        take each layer's weight dtype and are placed on the device its input arrives on
        (where it computes: also under accelerate offload, whose weights wait on
        ``meta``), once per device."""
        modules = self.locate(model)
        weights = {name: module.get_parameter("weight") for name, module in modules.items()}
        factors = {
            name: (a, b, self.alpha * scaling)
            for name, a, b, scaling in zip(
                self.modules, self.lora_A, self.lora_B, self.scalings, strict=True
            )
        }
        placed: dict[tuple[str, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

        def add_delta(name: str, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
            if self.alpha == 0:
                return None
            key = (name, x.device)
            if key not in placed:
                dtype = weights[name].dtype
                a, b, _ = factors[name]
                placed[key] = (a.to(x.device, dtype), b.to(x.device, dtype))
            (a, b), factor = placed[key], factors[name][2]
            delta = F.linear(F.linear(x.to(a.dtype), a), b) * factor
            return out + delta.to(out.dtype)

        return self._hook_modules(model, lambda: modules, add_delta, on="input-output")
