"""The weight arithmetic of folding an edit into a model's own weights (see docs/serving.md).

An edit folds exactly into stock weights when it is an affine map of the output of one
linear layer ``y = W x + b0`` (``W`` ``(out, in)``; GPT-2's ``Conv1D`` stores ``W^T``):

- ``y' = A y + c`` becomes the layer ``W' = A W``, ``b0' = A b0 + c`` (:func:`fold_output_map`);
- a shift of its input ``x' = x + s`` becomes ``b0' = b0 + W s`` (:func:`fold_input_shift`);
- a low-rank delta ``y' = y + s · B A x`` is merged by ``peft``'s own merge (:func:`merge_lora`).

A bias that the layer lacks needs a config flag that gives it one, loadably by plain
``AutoModelForCausalLM`` (:func:`bias_slots`); whether the layer's output is really what the
hook edits is checked on a probe forward pass (:func:`output_projections`,
:func:`shift_reaches_output`), not assumed from module names. All folds are computed in
float64 and cast to the layer's dtype.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..hf.hooks import hooked
from ..hf.layers import linear_dims, text_config
from ..hf.tokens import input_device
from ..util.extras import require

__all__ = [
    "ExportRefused",
    "affine_map",
    "bias_slots",
    "fold_input_shift",
    "fold_output_map",
    "is_identity",
    "is_zero",
    "merge_lora",
    "module_names",
    "output_projections",
    "shift_reaches_output",
]

EXACT = 1e-12
"""Entries of an extracted float64 map below this (relative to 1) count as exactly zero."""


class ExportRefused(ValueError):
    """The edit cannot be folded into stock weights: the message says why and which
    options (if any) would make it exportable."""


# ------------------------------------------------------------------ the edit's map
def affine_map(
    edit: Callable[[torch.Tensor], torch.Tensor], d: int, what: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A (d, d), c (d,))``, float64, with ``edit(h) = A h + c`` for every ``h`` ``(..., d)``.

    Read from the edit itself (``c = edit(0)``, column ``i`` of ``A`` = ``edit(e_i) − c``),
    so the maths stays where it is written, then checked on random activations: an edit
    that is not affine is :class:`ExportRefused` (``what`` names it in the message).
    """
    b = edit(torch.zeros(1, d, dtype=torch.float64))[0]
    a = (edit(torch.eye(d, dtype=torch.float64)) - b).T.contiguous()
    generator = torch.Generator().manual_seed(0)
    probe = 4 * torch.randn(16, d, generator=generator, dtype=torch.float64)
    got = edit(probe)
    deviation = float((got - (probe @ a.T + b)).abs().max())
    if deviation > 1e-5 * (1.0 + float(got.abs().max())):
        raise ExportRefused(
            f"{what} is not an affine map of the activation (deviation {deviation:.3g} on "
            "random activations), so no weight matrix and bias can hold it"
        )
    return a, b


def is_identity(a: torch.Tensor) -> bool:
    """Whether a float64 ``(d, d)`` map is the identity to :data:`EXACT`."""
    eye = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    return bool((a - eye).abs().max() <= EXACT)


def is_zero(c: torch.Tensor) -> bool:
    """Whether a float64 vector is zero to :data:`EXACT`."""
    return bool(c.abs().max() <= EXACT) if c.numel() else True


# ------------------------------------------------------------------ linear layers
def _weight_out_in(module: nn.Module) -> torch.Tensor:
    """The layer's weight as float64 ``(out, in)`` (GPT-2's ``Conv1D`` stores ``(in, out)``)."""
    weight = module.get_parameter("weight").detach().to(torch.float64)
    return weight.T if isinstance(module, Conv1D) else weight


def _bias(module: nn.Module) -> torch.Tensor | None:
    bias = getattr(module, "bias", None)
    return bias.detach().to(torch.float64) if isinstance(bias, torch.Tensor) else None


def _as_stored(module: nn.Module, weight_out_in: torch.Tensor) -> torch.Tensor:
    """A float64 ``(out, in)`` weight in the layer's own layout, dtype and device."""
    stored = module.get_parameter("weight")
    layout = weight_out_in.T if isinstance(module, Conv1D) else weight_out_in
    return layout.contiguous().to(device=stored.device, dtype=stored.dtype)


def fold_output_map(
    module: nn.Module, a: torch.Tensor | None, c: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """The layer's new ``{"weight", "bias"}`` after ``y' = A y + c`` (``A`` ``None``: the
    identity; ``c`` ``None``: zero). ``"bias"`` is absent when the result needs none (no
    bias before and no ``c``); the caller must give the layer a bias slot otherwise."""
    out: dict[str, torch.Tensor] = {}
    stored = module.get_parameter("weight")
    b0 = _bias(module)
    if a is not None:
        a = a.to(device=stored.device)
        out["weight"] = _as_stored(module, a @ _weight_out_in(module))
        if b0 is not None:
            b0 = a @ b0.to(stored.device)
    if c is not None:
        c = c.to(device=stored.device, dtype=torch.float64)
        b0 = c if b0 is None else b0.to(stored.device) + c
    if b0 is not None and (a is not None or c is not None):
        out["bias"] = b0.to(dtype=stored.dtype)
    return out


def fold_input_shift(module: nn.Module, shift: torch.Tensor) -> torch.Tensor:
    """The layer's new bias ``b0 + W s`` after its input is shifted by ``s`` ``(in,)``."""
    stored = module.get_parameter("weight")
    moved = _weight_out_in(module) @ shift.to(device=stored.device, dtype=torch.float64)
    b0 = _bias(module)
    total = moved if b0 is None else moved + b0.to(stored.device)
    return total.to(dtype=stored.dtype)


class _Holder(nn.Module):
    """One linear layer as the only child ``target`` (what peft injects an adapter into)."""

    def __init__(self, target: nn.Module) -> None:
        super().__init__()
        self.target = target


def merge_lora(
    module: nn.Module, lora_a: torch.Tensor, lora_b: torch.Tensor, scale: float
) -> torch.Tensor:
    """The layer's weight with ``scale · B A`` merged in, by peft's own merge
    (``LoraLayer.merge``) on a float32 copy of the layer (the model is not touched); in the
    layer's layout and dtype. ``A`` is ``(r, in)``, ``B`` ``(out, r)``."""
    peft = require("peft", "baselines", "exporting a LoRA editor")
    stored = module.get_parameter("weight")
    holder = _Holder(copy.deepcopy(module).to(torch.float32))
    rank = int(lora_a.shape[0])
    config = peft.LoraConfig(
        r=rank,
        lora_alpha=scale * rank,  # peft's scaling is lora_alpha / r
        lora_dropout=0.0,
        target_modules=["target"],
        fan_in_fan_out=isinstance(module, Conv1D),
        bias="none",
    )
    peft.inject_adapter_in_model(config, holder, adapter_name="export")
    layer: Any = holder.target  # a peft LoraLayer
    with torch.no_grad():
        layer.lora_A["export"].weight.copy_(lora_a.to(torch.float32))
        layer.lora_B["export"].weight.copy_(lora_b.to(torch.float32))
    layer.merge(safe_merge=True, adapter_names=["export"])
    merged = layer.get_base_layer().get_parameter("weight").detach()
    return merged.to(device=stored.device, dtype=stored.dtype)


def module_names(model: nn.Module) -> dict[int, str]:
    """``id(module)`` → its dotted name in ``model`` (for state-dict keys)."""
    return {id(module): name for name, module in model.named_modules()}


# ------------------------------------------------------------------ probe forwards
def _probe_ids(model: nn.Module) -> torch.Tensor:
    """A ``(1, 8)`` batch of token ids for structural checks (which values matter not)."""
    vocab = int(getattr(text_config(model.config), "vocab_size", 16) or 16)
    ids = (torch.arange(8) * 7 + 1) % vocab
    return ids[None].to(input_device(model))


def _run(model: nn.Module) -> None:
    with torch.no_grad():
        model(input_ids=_probe_ids(model))


def output_projections(
    model: nn.Module, sites: Mapping[int, nn.Module], width: int
) -> dict[int, nn.Module]:
    """Layer → the linear layer whose output *is* the site module's output (the MLP's
    output projection, ``down_proj`` / ``c_proj`` / ``dense_4h_to_h`` / ``fc2``, found on a
    probe forward pass: the ``width``-wide linear inside the site whose output equals the
    site's). A site that is itself a linear layer is its own projection.

    Raises:
        ExportRefused: a site whose output is not the output of one of its linear layers
            (e.g. it adds or normalises after its last projection).
    """
    found: dict[int, nn.Module] = {}
    candidates: dict[tuple[int, int], nn.Module] = {}
    for layer, site in sites.items():
        if linear_dims(site) is not None:
            found[layer] = site
            continue
        for index, (_, child) in enumerate(site.named_modules()):
            dims = linear_dims(child)
            if dims is not None and dims[1] == width:
                candidates[(layer, index)] = child
    pending = {layer: site for layer, site in sites.items() if layer not in found}
    if not pending:
        return found
    outputs: dict[Any, torch.Tensor] = {}

    def record(key: Any, hidden: torch.Tensor) -> None:
        outputs[key] = hidden.detach()

    sites_hooked = {("site", layer): s for layer, s in pending.items()}
    with hooked(sites_hooked, record), hooked(candidates, record):
        _run(model)
    for layer, site in pending.items():
        target = outputs.get(("site", layer))
        match = [
            module
            for key, module in candidates.items()
            if key[0] == layer
            and target is not None
            and key in outputs
            and torch.equal(outputs[key], target)
        ]
        if not match:
            raise ExportRefused(
                f"layer {layer}: the output of its {type(site).__name__} is not the output of "
                f"one of its {width}-wide linear layers, so no weight holds an edit of it"
            )
        found[layer] = match[-1]
    return found


def shift_reaches_output(model: nn.Module, block: nn.Module, projection: nn.Module) -> bool:
    """Whether adding a vector to ``projection``'s output adds exactly that vector to the
    output of the decoder layer ``block`` (true when the MLP's output joins the residual
    stream as the layer's last step; false with a norm after the MLP, e.g. Gemma's
    ``post_feedforward_layernorm``). Checked on a probe forward pass with a random shift."""
    outputs: dict[str, torch.Tensor] = {}

    def record(key: str, hidden: torch.Tensor) -> None:
        outputs[key] = hidden.detach().to(torch.float64)

    with hooked({"plain": block}, record):
        _run(model)
    scale = float(outputs["plain"].abs().max()) or 1.0
    generator = torch.Generator().manual_seed(1)
    delta = torch.randn(outputs["plain"].shape[-1], generator=generator, dtype=torch.float64)
    delta = delta * (0.1 * scale)

    def shift(_: str, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + delta.to(device=hidden.device, dtype=hidden.dtype)

    with hooked({"shifted": projection}, shift), hooked({"shifted": block}, record):
        _run(model)
    change = outputs["shifted"] - outputs["plain"]
    return bool((change - delta.to(change.device)).abs().max() <= 1e-4 * scale)


# ------------------------------------------------------------------ bias slots
def _bias_flags(config: Any) -> list[str]:
    """The config's boolean fields about biases that are off (``mlp_bias``, ``attention_bias``)."""
    values = text_config(config).to_dict()
    return sorted(k for k, v in values.items() if "bias" in k and v is False)


def _skeleton_shapes(model: nn.Module, config: Any) -> dict[str, torch.Size]:
    """The state-dict shapes of ``type(model)`` built from ``config`` on the meta device."""
    with torch.device("meta"):
        skeleton = type(model)(config)
    return {name: tensor.shape for name, tensor in skeleton.state_dict().items()}


def bias_slots(
    model: nn.Module, needed: Sequence[str]
) -> tuple[dict[str, bool], dict[str, torch.Size], list[str]]:
    """How to give the linear layers ``needed`` (dotted names lacking a bias) one that plain
    ``AutoModelForCausalLM`` loads: config flags to switch on (among the config's boolean
    ``*bias*`` fields that are off, each tried on a meta-device skeleton), the other new
    parameters those flags add (name → shape; written as zeros, which change nothing), and
    the layers no flag covers. A flag is used only if it adds biases and nothing else."""
    if not needed:
        return {}, {}, []
    current = {name: tensor.shape for name, tensor in model.state_dict().items()}
    remaining = [f"{name}.bias" for name in needed]
    flags: dict[str, bool] = {}
    added: dict[str, torch.Size] = {}
    for flag in _bias_flags(model.config):
        config = copy.deepcopy(model.config)
        setattr(text_config(config), flag, True)
        shapes = _skeleton_shapes(model, config)
        new = {k: s for k, s in shapes.items() if k not in current}
        kept = all(shapes.get(k) == s for k, s in current.items())
        if not kept or not all(k.endswith(".bias") for k in new):
            continue
        covered = [key for key in remaining if key in new]
        if not covered:
            continue
        flags[flag] = True
        added.update(new)
        remaining = [key for key in remaining if key not in covered]
        if not remaining:
            break
    missing = [key.removesuffix(".bias") for key in remaining]
    return flags, {k: s for k, s in added.items() if k not in current}, missing
