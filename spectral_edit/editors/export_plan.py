"""What an export changes: the weights that hold an editor's edit of a model, or why none can.

:func:`plan_export` dispatches on the editor's kind (SEA and the per-layer baselines: an
affine map of a site activation; ITI: a shift of the heads; LoRA: a weight delta), locates
the linear layer that holds the edit (:mod:`.fold`), and either returns a :class:`FoldPlan`
or raises :class:`~.fold.ExportRefused` with the reason and the options that would make the
editor exportable (docs/serving.md). Nothing is changed or written here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..core.options import Feature, Merge, Positions, Site
from ..hf.layers import find_decoder_layers, site_modules, text_config
from .base import Editor
from .baselines.iti import ITIEditor
from .baselines.iti_train import head_projections
from .baselines.leace import LeaceEditor
from .baselines.lora import LoRAEditor
from .baselines.mean_diff import MeanDifferenceEditor
from .baselines.pca_vector import PCAVectorEditor
from .fold import (
    ExportRefused,
    affine_map,
    bias_slots,
    fold_input_shift,
    fold_output_map,
    is_identity,
    is_zero,
    merge_lora,
    module_names,
    output_projections,
    shift_reaches_output,
)
from .sea import SpectralEditor

__all__ = ["SERVING_DOC", "ExportRefused", "FoldPlan", "plan_export"]

SERVING_DOC = "docs/serving.md"
"""Where the serving route of what does not fold is described (named in refusals)."""


@dataclasses.dataclass(frozen=True)
class FoldPlan:
    """What an export changes: ``tensors`` (state-dict key → new value, replacing a weight
    or adding a bias), ``config_flags`` (config fields switched on to give layers a bias)
    and ``folds`` (one JSON-able entry per changed layer: ``layer``, ``module``, ``fold``,
    ``bias_added``)."""

    tensors: Mapping[str, torch.Tensor]
    config_flags: Mapping[str, bool]
    folds: tuple[dict[str, Any], ...]


# ------------------------------------------------------------------------ the plan
def plan_export(model: nn.Module, editor: Editor) -> FoldPlan:
    """The weights that hold ``editor``'s edit of ``model`` (nothing is changed).

    Raises:
        ExportRefused: the edit cannot be folded into stock weights (the message says why
            and which options would make it exportable).
        ~spectral_edit.editors.file_format.EditorFileError: the editor does not fit ``model``.
    """
    editor.check_model(model)
    if isinstance(editor, ITIEditor):
        changes, needs_bias = _plan_iti(model, editor)
    elif isinstance(editor, LoRAEditor):
        changes, needs_bias = _plan_lora(model, editor), {}
    elif isinstance(editor, (SpectralEditor, MeanDifferenceEditor, PCAVectorEditor, LeaceEditor)):
        changes, needs_bias = _plan_site(model, editor)
    else:
        raise ExportRefused(
            f"no fold into stock weights is known for editors of kind "
            f"{editor.FORMAT.name!r}; serve it with hooks ({SERVING_DOC})"
        )
    flags, zeros, missing = bias_slots(model, sorted(needs_bias))
    if missing:
        raise ExportRefused(_no_bias_slot(model, editor, missing, needs_bias))
    tensors: dict[str, torch.Tensor] = {}
    folds = []
    for name, (layer, fold, new) in changes.items():
        for part, value in new.items():
            tensors[f"{name}.{part}"] = value
        folds.append(
            {"layer": layer, "module": name, "fold": fold, "bias_added": name in needs_bias}
        )
    for key, shape in zeros.items():
        if key not in tensors:
            weight = model.get_submodule(key.removesuffix(".bias")).get_parameter("weight")
            tensors[key] = torch.zeros(shape, dtype=weight.dtype, device=weight.device)
    return FoldPlan(tensors=tensors, config_flags=flags, folds=tuple(folds))


Changes = dict[str, tuple[int | None, str, dict[str, torch.Tensor]]]
"""Module name → (layer, kind of fold, its new ``weight`` and/or ``bias``)."""


def _plan_site(
    model: nn.Module,
    editor: SpectralEditor | MeanDifferenceEditor | PCAVectorEditor | LeaceEditor,
) -> tuple[Changes, dict[str, int]]:
    """An affine edit ``h' = A h + c`` of each layer's site activation, folded into the
    MLP's output projection."""
    kind = _kind(editor)
    if isinstance(editor, SpectralEditor):
        _check_sea_options(editor)
        layers: Sequence[int] = editor.active_layers
    else:
        layers = editor.layers
    d = editor.hidden_size
    maps = {
        layer: affine_map(_edit_of(editor, layer), d, f"the {kind} edit of layer {layer}")
        for layer in layers
    }
    if editor.site is Site.RESIDUAL:
        moved = [layer for layer, (a, _) in maps.items() if not is_identity(a)]
        if moved:
            raise ExportRefused(_residual_refusal(kind, moved))
    projections = output_projections(
        model, site_modules(model, layers, Site.MLP, editor.layer_path), d
    )
    blocks = find_decoder_layers(model, editor.layer_path)
    names = module_names(model)
    changes: Changes = {}
    needs_bias: dict[str, int] = {}
    for layer, (a, c) in maps.items():
        matrix = None if is_identity(a) else a
        shift = None if is_zero(c) else c
        if matrix is None and shift is None:
            continue  # e.g. α = 0: nothing to fold
        projection = projections[layer]
        name = names[id(projection)]
        if editor.site is Site.RESIDUAL and not shift_reaches_output(
            model, blocks[layer], projection
        ):
            raise ExportRefused(_post_norm_refusal(kind, layer, name, type(blocks[layer]).__name__))
        new = fold_output_map(projection, matrix, shift)
        if "bias" in new and getattr(projection, "bias", None) is None:
            needs_bias[name] = layer
        fold = "matrix" if shift is None else ("bias" if matrix is None else "matrix+bias")
        changes[name] = (layer, fold, new)
    return changes, needs_bias


def _edit_of(editor: Any, layer: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``h ↦ editor.edit(h, layer)``: the editor's own edit of one layer's activations."""

    def edit(hidden: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = editor.edit(hidden, layer)
        return result

    return edit


def _check_sea_options(editor: SpectralEditor) -> None:
    """Refuse the SEA options whose edit is not one matrix on one layer's output."""
    if editor.positions is not Positions.ALL:
        raise ExportRefused(
            f"the editor edits only the {editor.positions.value!r} positions "
            f"(positions={editor.positions.value!r}); weights act on every position alike, "
            "so a position-restricted edit cannot be folded into them. Exportable with "
            "positions='all' (sea fit --positions all, or editor.with_options(positions='all'),"
            " which edits the prompt's positions too)"
        )
    if editor.feature is not Feature.LINEAR:
        raise ExportRefused(
            f"Φ-SEA (feature={editor.feature.value!r}) edits φ(h) and maps back with φ⁻¹ "
            "element-wise, which is not linear in h, so no weight matrix can hold it. "
            "Exportable: a linear SEA editor (sea fit --feature linear --merge mean --site mlp)"
        )
    if editor.merge is Merge.NORM:
        raise ExportRefused(
            "the norm merge rescales every token's edited activation to its own norm "
            "(z·‖c‖/‖z‖), which is not linear in h, so no weight matrix can hold it. "
            "Exportable with merge='mean' (sea fit --merge mean, or "
            "editor.with_options(merge='mean'), which changes the edit to z/2)"
        )


def _plan_iti(model: nn.Module, editor: ITIEditor) -> tuple[Changes, dict[str, int]]:
    """ITI's head shifts ``s`` entering each attention output projection: its bias ``b + W s``."""
    shifts = editor.shifts()
    modules = head_projections(
        model, list(shifts), editor.num_heads, editor.head_dim, editor.layer_path, editor.attn_path
    )
    names = module_names(model)
    changes: Changes = {}
    needs_bias: dict[str, int] = {}
    for layer, shift in shifts.items():
        if is_zero(shift.to(torch.float64)):
            continue
        module = modules[layer]
        name = names[id(module)]
        if getattr(module, "bias", None) is None:
            needs_bias[name] = layer
        changes[name] = (layer, "bias", {"bias": fold_input_shift(module, shift)})
    return changes, needs_bias


def _plan_lora(model: nn.Module, editor: LoRAEditor) -> Changes:
    """Each adapter merged into its layer's weight (peft's merge)."""
    if editor.alpha == 0:
        return {}
    shared = _shared_weights(model)
    changes: Changes = {}
    modules = editor.locate(model)
    for name, a, b, scaling in zip(
        editor.modules, editor.lora_A, editor.lora_B, editor.scalings, strict=True
    ):
        module = modules[name]
        others = shared.get(module.get_parameter("weight").data_ptr(), [])
        if len(others) > 1:
            raise ExportRefused(
                f"the LoRA adapter on {name!r} changes a weight the model shares with "
                f"{[o for o in others if o != name + '.weight']} (tied weights): merged, it "
                "would change those too. Exportable: adapters on untied layers (sea "
                "compare's LoRA targets the attention projections by default)"
            )
        changes[name] = (
            None,
            "lora-merge",
            {"weight": merge_lora(module, a, b, editor.alpha * scaling)},
        )
    return changes


def _shared_weights(model: nn.Module) -> dict[int, list[str]]:
    """``data_ptr`` → the names of every parameter stored there (tied weights share one)."""
    out: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        out.setdefault(parameter.data_ptr(), []).append(name)
    return out


# ------------------------------------------------------------------------ refusals
def _kind(editor: Editor) -> str:
    return {
        "spectral-edit/sea": "SEA",
        "spectral-edit/iti": "ITI",
        "spectral-edit/lora": "LoRA",
        "spectral-edit/mean-diff": "mean-difference",
        "spectral-edit/pca-vector": "PCA-vector",
        "spectral-edit/leace": "LEACE",
    }.get(editor.FORMAT.name, editor.FORMAT.name)


def _residual_refusal(kind: str, layers: Sequence[int]) -> str:
    hint = (
        "Exportable: fit at the MLP site (sea fit --site mlp --merge mean), whose edit is one "
        "matrix on the MLP's output projection"
        if kind == "SEA"
        else "Exportable: fit at the MLP site (site='mlp')"
    )
    return (
        f"the {kind} edit is at the residual site (layers {list(layers)}): a linear map of the "
        "residual stream, which the later layers read through the skip connections, is held "
        f"by no single weight matrix. {hint}"
    )


def _post_norm_refusal(kind: str, layer: int, name: str, block: str) -> str:
    return (
        f"the {kind} edit shifts the residual stream after layer {layer}, but a bias on "
        f"{name!r} would not shift it: {block} transforms the MLP's output (e.g. a "
        "post-feedforward norm) before adding it to the residual stream. Exportable: an "
        "editor at the MLP site (site='mlp') where the MLP's output projection has, or can "
        f"be given, a bias; otherwise serve it with hooks ({SERVING_DOC})"
    )


def _no_bias_slot(
    model: nn.Module, editor: Editor, missing: Sequence[str], needs_bias: Mapping[str, int]
) -> str:
    """Why a constant cannot be folded: the layers lack a bias and no config flag adds one."""
    kind = _kind(editor)
    layers = sorted({needs_bias[name] for name in missing if needs_bias.get(name) is not None})
    config = text_config(model.config)
    tried = sorted(k for k, v in config.to_dict().items() if "bias" in k and v is False)
    if isinstance(editor, SpectralEditor):
        hint = (
            "Exportable: the uncentred edit, a pure matrix (center_edit=False: sea fit "
            "without --center-edit, or editor.with_options(center_edit=False))"
        )
    elif isinstance(editor, ITIEditor):
        hint = (
            "ITI has no option without the shift; on this architecture serve it with hooks "
            f"({SERVING_DOC})"
        )
    else:
        hint = (
            f"{kind} has no option without the constant; on this architecture serve it with "
            f"hooks ({SERVING_DOC})"
        )
    where = "the attention output projection" if kind == "ITI" else "the MLP's output projection"
    return (
        f"the {kind} edit adds a constant vector at layers {layers}, which needs a bias on "
        f"{where} ({', '.join(missing)}); {type(model).__name__} has none there and no "
        f"config flag of {getattr(config, 'model_type', '?')!r} adds one loadably by plain "
        f"AutoModelForCausalLM (bias flags tried: {', '.join(tried) or 'none'}). {hint}"
    )
