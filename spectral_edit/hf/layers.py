"""Find the decoder layers of a causal LM generically, and name the edit sites.

Every Hugging Face causal LM keeps its decoder blocks in one ``nn.ModuleList`` whose
length is the config's layer count (``model.layers``, ``transformer.h``,
``gpt_neox.layers``, ``model.decoder.layers``, ...). We find it by shape, not by
architecture name, and let the user override it with a dotted module path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn
from transformers.pytorch_utils import Conv1D

from ..core.options import Site

_MLP_NAMES = ("mlp", "feed_forward", "ffn", "fc2")
_ATTENTION_NAMES = ("self_attn", "attn", "attention", "self_attention", "attn_layer")
_ATTENTION_OUTPUT_NAMES = ("o_proj", "c_proj", "dense", "out_proj", "wo", "proj_out")


class LayerNotFoundError(LookupError):
    """The decoder layers (or a site inside them) could not be located."""


def text_config(config: Any) -> Any:
    """The text model's config: ``config.get_text_config()`` where the config has it
    (multimodal configs nest the language model's), else ``config`` itself."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def num_layers_of(model: nn.Module) -> int | None:
    """The config's decoder layer count, or None when the model has no such config."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    config = text_config(config)
    for name in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def hidden_size_of(model: nn.Module) -> int:
    """The residual-stream width ``d`` of a causal LM."""
    config = text_config(model.config)
    for name in ("hidden_size", "n_embd", "d_model"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise LayerNotFoundError(f"cannot read the hidden size from {type(config).__name__}")


def _module_lists(model: nn.Module) -> str:
    """The model's non-empty ``ModuleList`` paths with their lengths, for error messages
    (``"'model.layers' (3), ..."``, or ``"none"``)."""
    found = [
        f"{name!r} ({len(module)})"
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) > 0 and name
    ]
    return ", ".join(found[:8]) + (" ..." if len(found) > 8 else "") if found else "none"


_OVERRIDE = "pass the decoder layers' module path as layer_path (on the command line: --layer-path)"


def find_decoder_layers(model: nn.Module, path: str | None = None) -> nn.ModuleList:
    """Return the ``nn.ModuleList`` of decoder blocks.

    Args:
        model: any causal LM (or its base model).
        path: optional dotted module path overriding the search, e.g. ``"model.layers"``.

    The search takes the shallowest ``ModuleList`` whose length equals the config's layer
    count and whose entries share one class; without a config, the longest such list.

    Raises:
        LayerNotFoundError: ``path`` is not a non-empty ``ModuleList`` of ``model``, or no
            list qualifies; the message lists the model's ``ModuleList`` paths and says to
            pass ``layer_path`` (``--layer-path`` on the command line).
    """
    if path is not None:
        try:
            module = model.get_submodule(path)
        except AttributeError as error:
            raise LayerNotFoundError(
                f"layer path {path!r} does not exist in {type(model).__name__}; its "
                f"ModuleLists: {_module_lists(model)}"
            ) from error
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            raise LayerNotFoundError(
                f"layer path {path!r} is a {type(module).__name__}, not a non-empty "
                f"ModuleList; the ModuleLists of {type(model).__name__}: {_module_lists(model)}"
            )
        return module

    expected = num_layers_of(model)
    candidates: list[tuple[int, str, nn.ModuleList]] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(block) for block in module}) != 1:
            continue
        if expected is not None and len(module) != expected:
            continue
        candidates.append((name.count("."), name, module))
    if not candidates:
        raise LayerNotFoundError(
            f"no decoder-layer ModuleList found in {type(model).__name__}"
            + (f" with {expected} entries (the config's layer count)" if expected else "")
            + f"; its ModuleLists: {_module_lists(model)}. {_OVERRIDE}, e.g. "
            "layer_path='model.layers'"
        )
    if expected is None:
        candidates.sort(key=lambda c: (-len(c[2]), c[0]))
    else:
        candidates.sort(key=lambda c: c[0])
    return candidates[0][2]


def site_module(layer: nn.Module, site: Site | str) -> nn.Module:
    """The module whose output is the activation at ``site`` of one decoder ``layer``:
    :attr:`Site.RESIDUAL` = the layer itself (its output is ``hidden_states[l+1]``),
    :attr:`Site.MLP` = the layer's MLP block."""
    if site not in Site.values():
        raise ValueError(f"unknown site {site!r}; expected one of {Site.values()}")
    if site == Site.RESIDUAL:
        return layer
    for name in _MLP_NAMES:
        child = getattr(layer, name, None)
        if isinstance(child, nn.Module):
            return child
    raise LayerNotFoundError(
        f"site 'mlp': {type(layer).__name__} has none of the children {_MLP_NAMES}"
    )


def site_modules(
    model: nn.Module,
    layers: Sequence[int],
    site: Site | str = Site.RESIDUAL,
    layer_path: str | None = None,
) -> dict[int, nn.Module]:
    """Map each layer index to the module whose output is its ``site`` activation."""
    return {index: site_module(block, site) for index, block in _blocks(model, layers, layer_path)}


def _blocks(
    model: nn.Module, layers: Sequence[int], layer_path: str | None
) -> list[tuple[int, nn.Module]]:
    """``(index, decoder block)`` for each requested layer; IndexError when out of range."""
    blocks = find_decoder_layers(model, layer_path)
    out = []
    for index in layers:
        if not 0 <= index < len(blocks):
            raise IndexError(f"layer {index} out of range: the model has {len(blocks)} layers")
        out.append((index, blocks[index]))
    return out


def linear_dims(module: nn.Module) -> tuple[int, int] | None:
    """``(in_features, out_features)`` of a linear layer (``nn.Linear`` and its subclasses,
    or GPT-2's ``Conv1D`` whose weight is stored transposed, ``(in, out)``); ``None`` for
    any other module."""
    if isinstance(module, nn.Linear):
        return int(module.in_features), int(module.out_features)
    if isinstance(module, Conv1D):
        return int(module.weight.shape[0]), int(module.weight.shape[1])
    return None


def attention_head_shape(model: nn.Module) -> tuple[int, int]:
    """``(num_heads, head_dim)`` of the model's attention (query heads, not KV heads).

    ``head_dim`` is the config's ``head_dim`` when set (it may differ from
    ``hidden_size // num_heads``, e.g. Gemma 3), else ``hidden_size // num_heads``.
    The concatenated head outputs entering the attention output projection are
    ``num_heads * head_dim`` wide, head ``h`` being ``[h * head_dim, (h + 1) * head_dim)``.
    """
    config = text_config(model.config)
    heads = next(
        (
            value
            for name in ("num_attention_heads", "n_head", "num_heads")
            if isinstance(value := getattr(config, name, None), int) and value > 0
        ),
        None,
    )
    if heads is None:
        raise LayerNotFoundError(
            f"cannot read the attention head count from {type(config).__name__}"
        )
    head_dim = getattr(config, "head_dim", None)
    if isinstance(head_dim, int) and head_dim > 0:
        return heads, head_dim
    hidden = hidden_size_of(model)
    if hidden % heads:
        raise LayerNotFoundError(
            f"{type(config).__name__} has no head_dim and hidden size {hidden} is not a "
            f"multiple of its {heads} heads"
        )
    return heads, hidden // heads


def attention_output_module(layer: nn.Module, attn_path: str | None = None) -> nn.Module:
    """The linear output projection of one decoder ``layer``'s attention block.

    Its input is the concatenation of the per-head attention outputs. Without
    ``attn_path`` the attention child is found by name (``self_attn``, ``attn``,
    ``attention``, ...; else the first child whose class name contains ``Attention``), and
    its projection by name (``o_proj``, ``c_proj``, ``dense``, ``out_proj``, ...).
    ``attn_path`` is a dotted path relative to the layer, e.g. ``"self_attn.o_proj"``.
    """
    if attn_path is not None:
        try:
            module = layer.get_submodule(attn_path)
        except AttributeError as error:
            raise LayerNotFoundError(
                f"attention path {attn_path!r} does not exist in {type(layer).__name__}"
            ) from error
        if linear_dims(module) is None:
            raise LayerNotFoundError(
                f"attention path {attn_path!r} is a {type(module).__name__}, not a linear layer"
            )
        return module
    for attention in _attention_children(layer):
        for name in _ATTENTION_OUTPUT_NAMES:
            projection = getattr(attention, name, None)
            if isinstance(projection, nn.Module) and linear_dims(projection) is not None:
                return projection
    raise LayerNotFoundError(
        f"no attention output projection found in {type(layer).__name__} (tried the "
        f"children {_ATTENTION_NAMES} and their linears {_ATTENTION_OUTPUT_NAMES}); pass "
        "attn_path relative to the layer, e.g. attn_path='self_attn.o_proj'"
    )


def _attention_children(layer: nn.Module) -> list[nn.Module]:
    """The layer's attention child candidates: known names first, then by class name."""
    named = [getattr(layer, name, None) for name in _ATTENTION_NAMES]
    found = [module for module in named if isinstance(module, nn.Module)]
    found += [
        child
        for child in layer.children()
        if "attention" in type(child).__name__.lower() and child not in found
    ]
    return found


def attention_output_modules(
    model: nn.Module,
    layers: Sequence[int],
    layer_path: str | None = None,
    attn_path: str | None = None,
) -> dict[int, nn.Module]:
    """Map each layer index to its attention output projection (see
    :func:`attention_output_module`); hook it ``on="input"`` to read or edit the heads."""
    return {
        index: attention_output_module(block, attn_path)
        for index, block in _blocks(model, layers, layer_path)
    }


TOP_SIGNATURE = "top-signature-"
"""The prefix of a ``top-signature-L`` spec: the L layers with the highest signature
(method.md, the paper's layer heuristic), chosen at fit time from the demonstrations."""


def top_signature_count(spec: str | int | Sequence[int] | None, num_layers: int) -> int | None:
    """``L`` of a ``"top-signature-L"`` spec (``1 <= L <= num_layers``), ``None`` for any
    other spec. Raises ``ValueError`` for a malformed or out-of-range ``L``."""
    if not isinstance(spec, str) or not spec.strip().startswith(TOP_SIGNATURE):
        return None
    text = spec.strip()[len(TOP_SIGNATURE) :]
    if not text.isdigit() or not 1 <= int(text) <= num_layers:
        raise ValueError(
            f"bad layer spec {spec!r}: expected top-signature-L with an integer L in "
            f"1..{num_layers} (the model has {num_layers} layers)"
        )
    return int(text)


def capture_layers(spec: str | int | Sequence[int] | None, num_layers: int) -> list[int]:
    """The layers a fit with layer spec ``spec`` captures: every layer for
    ``top-signature-L`` (the candidates it chooses L of), else :func:`parse_layers`."""
    if top_signature_count(spec, num_layers) is not None:
        return list(range(num_layers))
    return parse_layers(spec, num_layers)


def parse_layers(spec: str | int | Sequence[int] | None, num_layers: int) -> list[int]:
    """Parse a layer selection into sorted, unique, 0-based indices.

    ``None``/``"all"`` → every layer; ``"last-L"`` → the top L layers (``1 <= L <=
    num_layers``); ``"3,5,7"`` or a sequence → those layers; an int ``i`` → that one layer
    (a single index, not a count: ``-1`` is the last layer, ``-2`` the one below it).
    Negative indices count from the end. Raises ``ValueError`` for an index out of range
    or an empty selection.
    """
    if spec is None or spec == "all":
        return list(range(num_layers))
    if top_signature_count(spec, num_layers) is not None:
        raise ValueError(
            f"layer spec {spec!r} chooses layers by the demonstrations' signatures, so it "
            "is resolved when fitting SEA (sea fit, fit_editor, fit_from_activations), not here"
        )
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("last-"):
            try:
                count = int(text[5:])
            except ValueError as error:
                raise ValueError(
                    f"bad layer spec {spec!r}: expected last-L with integer L"
                ) from error
            if not 1 <= count <= num_layers:
                raise ValueError(
                    f"bad layer spec {spec!r}: L must be in 1..{num_layers} (the model has "
                    f"{num_layers} layers)"
                )
            return list(range(num_layers - count, num_layers))
        try:
            items = [int(part) for part in text.split(",") if part.strip()]
        except ValueError as error:
            raise ValueError(
                f"bad layer spec {spec!r}: use 'all', 'last-L' or a comma list such as '10,11'"
            ) from error
    elif isinstance(spec, int):
        items = [spec]
    else:
        items = [int(i) for i in spec]
    if not items:
        raise ValueError(f"bad layer spec {spec!r}: no layers selected")
    out = set()
    for index in items:
        resolved = index + num_layers if index < 0 else index
        if not 0 <= resolved < num_layers:
            raise ValueError(
                f"bad layer spec {spec!r}: layer {index} out of range for a model with "
                f"{num_layers} layers (use 0..{num_layers - 1}, or -{num_layers}..-1 from "
                "the end)"
            )
        out.add(resolved)
    return sorted(out)
