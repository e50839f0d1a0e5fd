"""The pieces of a causal LM that turn hidden states into logits: the base model, the
final norm and the LM head, found generically."""

from __future__ import annotations

import torch
from torch import nn

from .devices import execution_device
from .layers import find_decoder_layers, text_config

_FINAL_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "norm_f")


def decoder_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The base model (whose output is the final-normed hidden state) and the LM head.

    ``model.base_model`` where it names the decoder; otherwise (e.g. transformers 4.57's
    Gemma 3, whose ``base_model_prefix`` names a submodule that does not exist) the one
    child module that holds the decoder layers.
    """
    base = getattr(model, "base_model", None)
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if base is model or base is None:
        blocks = find_decoder_layers(model)
        owners = [
            child
            for child in model.children()
            if child is not head and any(m is blocks for m in child.modules())
        ]
        base = owners[0] if len(owners) == 1 else None
    if base is None or head is None:
        raise TypeError(f"{type(model).__name__} is not a causal LM with a separate LM head")
    return base, head


def lm_head_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Logits from final hidden states ``(..., d)``, exactly as the model's forward makes
    them (including Gemma-style final soft-capping and Cohere/Granite logit scaling)."""
    _, head = decoder_and_head(model)
    return finish_logits(model, head(hidden.to(execution_device(head))).float())


def finish_logits(model: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """The LM head's float32 output ``logits`` as the model's forward finishes it: times
    ``logit_scale``, divided by ``logits_scaling``, soft-capped by
    ``final_logit_softcapping`` (each where the text config sets it)."""
    scale, scaling, cap = _finishing(model)
    if scale != 1:
        logits = logits * scale
    if scaling != 1:
        logits = logits / scaling
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def logits_monotone(model: nn.Module) -> bool:
    """Whether :func:`finish_logits` keeps the order of logits (positive scales; the
    soft-capping is increasing), so that the head's raw arg-max is the model's."""
    scale, scaling, cap = _finishing(model)
    return scale > 0 and scaling > 0 and cap >= 0


def finishes_logits(model: nn.Module) -> bool:
    """Whether :func:`finish_logits` changes logits at all (some scale or cap is set)."""
    return _finishing(model) != (1.0, 1.0, 0.0)


def _finishing(model: nn.Module) -> tuple[float, float, float]:
    """``(logit_scale, logits_scaling, final_logit_softcapping)`` of the text config;
    ``1, 1, 0`` where unset."""
    config = text_config(model.config)
    values = []
    for name, default in (("logit_scale", 1.0), ("logits_scaling", 1.0)):
        value = getattr(config, name, None)
        values.append(float(value) if isinstance(value, (int, float)) else default)
    cap = getattr(config, "final_logit_softcapping", None)
    values.append(float(cap) if isinstance(cap, (int, float)) and cap else 0.0)
    return values[0], values[1], values[2]


def final_norm(model: nn.Module) -> nn.Module:
    """The norm the base model applies after its last decoder layer (``model.norm``,
    ``transformer.ln_f``, ``gpt_neox.final_layer_norm``, ``model.decoder.final_layer_norm``).

    Raises:
        LookupError: no such module outside the decoder layers.
    """
    base, _ = decoder_and_head(model)
    blocks = find_decoder_layers(model)
    inside = {id(m) for block in blocks for m in block.modules()}
    found = [
        module
        for name, module in base.named_modules()
        if name.rsplit(".", 1)[-1] in _FINAL_NORM_NAMES
        and name.count(".") <= 1
        and id(module) not in inside
    ]
    if len(found) != 1:
        raise LookupError(
            f"cannot identify the final norm of {type(base).__name__} "
            f"({len(found)} candidates named {_FINAL_NORM_NAMES})"
        )
    return found[0]
