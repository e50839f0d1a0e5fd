"""Find the decoder layers of a causal LM generically, and name the edit sites.

Every Hugging Face causal LM keeps its decoder blocks in one ``nn.ModuleList`` whose
length is the config's layer count (``model.layers``, ``transformer.h``,
``gpt_neox.layers``, ``model.decoder.layers``, ...). We find it by shape, not by
architecture name, and let the user override it with a dotted module path.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

SITES = ("residual", "mlp")
"""Edit/capture sites: ``residual`` = the decoder layer's output (``hidden_states[l+1]``),
``mlp`` = the output of the layer's MLP block."""

_MLP_NAMES = ("mlp", "feed_forward", "ffn", "fc2")


class LayerNotFoundError(LookupError):
    """The decoder layers (or a site inside them) could not be located."""


def num_layers_of(model: nn.Module) -> int | None:
    """The config's decoder layer count, or None when the model has no such config."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    for name in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def hidden_size_of(model: nn.Module) -> int:
    """The residual-stream width ``d`` of a causal LM."""
    config = model.config
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    for name in ("hidden_size", "n_embd", "d_model"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise LayerNotFoundError(f"cannot read the hidden size from {type(config).__name__}")


def find_decoder_layers(model: nn.Module, path: str | None = None) -> nn.ModuleList:
    """Return the ``nn.ModuleList`` of decoder blocks.

    Args:
        model: any causal LM (or its base model).
        path: optional dotted module path overriding the search, e.g. ``"model.layers"``.

    The search takes the shallowest ``ModuleList`` whose length equals the config's layer
    count and whose entries share one class; without a config, the longest such list.
    """
    if path is not None:
        try:
            module = model.get_submodule(path)
        except AttributeError as error:
            raise LayerNotFoundError(
                f"layer path {path!r} does not exist in {type(model).__name__}"
            ) from error
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            raise LayerNotFoundError(
                f"layer path {path!r} is a {type(module).__name__}, not a non-empty ModuleList"
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
            + (f" with {expected} entries" if expected else "")
            + "; pass the module path explicitly (e.g. layer_path='model.layers')"
        )
    if expected is None:
        candidates.sort(key=lambda c: (-len(c[2]), c[0]))
    else:
        candidates.sort(key=lambda c: c[0])
    return candidates[0][2]


def site_module(layer: nn.Module, site: str) -> nn.Module:
    """The module whose output is the activation at ``site`` of one decoder ``layer``."""
    if site == "residual":
        return layer
    if site == "mlp":
        for name in _MLP_NAMES:
            child = getattr(layer, name, None)
            if isinstance(child, nn.Module):
                return child
        raise LayerNotFoundError(
            f"site 'mlp': {type(layer).__name__} has none of the children {_MLP_NAMES}"
        )
    raise ValueError(f"unknown site {site!r}; expected one of {SITES}")


def site_modules(
    model: nn.Module, layers: Sequence[int], site: str = "residual", layer_path: str | None = None
) -> dict[int, nn.Module]:
    """Map each layer index to the module whose output is its ``site`` activation."""
    blocks = find_decoder_layers(model, layer_path)
    out: dict[int, nn.Module] = {}
    for index in layers:
        if not 0 <= index < len(blocks):
            raise IndexError(f"layer {index} out of range: the model has {len(blocks)} layers")
        out[index] = site_module(blocks[index], site)
    return out


def parse_layers(spec: str | int | Sequence[int] | None, num_layers: int) -> list[int]:
    """Parse a layer selection into sorted, unique, 0-based indices.

    ``None``/``"all"`` → every layer; ``"last-L"`` (or int ``-L``) → the top L layers;
    ``"3,5,7"`` or a sequence → those layers (negative indices count from the end).
    """
    if spec is None or spec == "all":
        return list(range(num_layers))
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
                raise ValueError(f"bad layer spec {spec!r}: L must be in 1..{num_layers}")
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
            raise ValueError(f"layer {index} out of range for a model with {num_layers} layers")
        out.add(resolved)
    return sorted(out)
