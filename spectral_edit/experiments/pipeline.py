"""High-level glue: demonstrations + model → fitted editor (what ``sea fit`` runs)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from ..core.distributed import share, world
from ..core.features import get_feature_map
from ..core.options import SeaOptions, Token
from ..core.statistics import check_feature_scales, check_ranks
from ..demos.activations import DemoActivations, capture_demos
from ..demos.format import Demonstration
from ..demos.prompts import PLAIN, PromptFormat
from ..editors.file_format import model_identity
from ..editors.sea import SpectralEditor
from ..editors.sea_fit import default_feature_scales, fit_from_arrays, layer_signatures
from ..hf.layers import capture_layers, find_decoder_layers, hidden_size_of, top_signature_count
from ..util.identity import path_identity

DEFAULT_OPTIONS = SeaOptions()


def model_metadata(model: nn.Module) -> dict[str, Any]:
    """The model's shareable identity for an editor's metadata: name, revision and
    architecture, never a local path (:func:`~spectral_edit.editors.file_format.
    model_identity`; best effort, never raises)."""
    return model_identity(model)


def demos_file_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """A demonstrations file as an editor's metadata records it: its name and sha256
    (``demonstrations_file``, ``demonstrations_sha256``), never its local path."""
    identity = path_identity(path)
    return {"demonstrations_file": identity["name"], "demonstrations_sha256": identity["sha256"]}


def fit_from_activations(
    activations: DemoActivations,
    num_layers: int,
    options: SeaOptions = DEFAULT_OPTIONS,
    *,
    metadata: Mapping[str, Any] | None = None,
    distributed: bool = False,
    shard_layers: bool = False,
) -> SpectralEditor:
    """Fit an editor on captured demonstration activations (cheap: no model pass).

    The capture options of ``options`` (neutral, token) are not used here: the
    activations already hold them; every captured layer is fitted, except under
    ``options.layers = "top-signature-L"``, which fits the L captured layers of highest
    signature (:func:`choose_by_signature`; the editor's metadata records the choice as
    ``layer_selection``). ``options.feature_scales``: Φ-SEA scales, one per captured layer
    (default: the neutral activations' RMS per layer). ``distributed``: these are one
    rank's share; ``shard_layers``: each rank keeps and fits only its block of the layers
    (:func:`~spectral_edit.editors.sea_fit.fit_from_arrays`)."""
    info = dict(metadata or {})
    count = top_signature_count(options.layers, len(activations.layers))
    if count is not None:
        activations, info["layer_selection"], scales = choose_by_signature(
            activations, count, options, distributed=distributed
        )
        options = options.replace(feature_scales=scales)
    return fit_from_arrays(
        activations.neutral,
        activations.positive,
        activations.negative,
        layers=activations.layers,
        num_layers=num_layers,
        metadata=info,
        distributed=distributed,
        shard_layers=shard_layers,
        **options.fit_kwargs(),
    )


def choose_by_signature(
    activations: DemoActivations,
    count: int,
    options: SeaOptions = DEFAULT_OPTIONS,
    *,
    distributed: bool = False,
) -> tuple[DemoActivations, dict[str, Any], tuple[float, ...] | None]:
    """The ``count`` captured layers of highest signature (the paper's layer heuristic;
    ties: the lower layer), in the feature space of ``options`` (Φ-SEA scales: given per
    captured layer, or each layer's neutral RMS).

    Returns the activations at the chosen layers (in layer order), the record of the
    choice (``rule``, ``candidates``, their ``signatures``, ``chosen``) and the chosen
    layers' Φ-SEA scales (``None`` for a linear fit). ``distributed``: signatures of every
    rank's rows.
    """
    scales = options.feature_scales
    if scales is None and not get_feature_map(options.feature).is_identity:
        scales = tuple(default_feature_scales(activations.neutral, distributed=distributed))
    values = layer_signatures(
        activations.positive,
        activations.negative,
        feature=options.feature,
        feature_scales=scales,
        distributed=distributed,
    ).tolist()
    best = sorted(range(len(values)), key=lambda j: (-values[j], j))[:count]
    index = sorted(best)
    chosen = DemoActivations(
        activations.neutral[:, index],
        activations.positive[:, index],
        activations.negative[:, index],
        tuple(activations.layers[j] for j in index),
    )
    record = {
        "rule": f"top-signature-{count}",
        "candidates": list(activations.layers),
        "signatures": values,
        "chosen": list(chosen.layers),
    }
    return chosen, record, None if scales is None else tuple(scales[j] for j in index)


def check_fit_options(options: SeaOptions, layers: Sequence[int], hidden_size: int) -> None:
    """Refuse, before any capture, what the fit would refuse after it: fixed ranks beyond
    the hidden size and Φ-SEA scales of the wrong count for ``layers``
    (:class:`~spectral_edit.core.statistics.FitError`)."""
    check_ranks(hidden_size, pos_rank=options.pos_rank, neg_rank=options.neg_rank)
    if options.feature_scales is not None and not get_feature_map(options.feature).is_identity:
        check_feature_scales(str(options.feature), options.feature_scales, layers)


def fit_editor(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    demos: Sequence[Demonstration],
    options: SeaOptions = DEFAULT_OPTIONS,
    *,
    batch_size: int = 8,
    progress: bool = False,
    metadata: Mapping[str, Any] | None = None,
    prompt_format: PromptFormat = PLAIN,
    shard_layers: bool = False,
) -> SpectralEditor:
    """Capture the demonstrations' activations at ``options.layers`` and fit an editor.

    ``prompt_format``: plain prompts, or a chat template the prompts and answers are put
    in (:func:`~spectral_edit.demos.activations.capture_demos`); the editor's metadata
    records it (``chat_template``, ``system_prompt``: :meth:`PromptFormat.record`), so an
    evaluation in another format is warned about. ``metadata`` is added to the editor's
    (after the model's name and revision, the neutral and token options, the prompt
    format and the capture time).

    Under an initialised default process group of K > 1 ranks (e.g. ``torchrun``), each
    rank captures its contiguous share of ``demos``
    (:func:`~spectral_edit.core.distributed.share`) and the statistics are reduced
    before the fit, so every rank returns the editor of all demonstrations (equal to a
    one-process fit up to round-off); its metadata records ``world_size``. Every rank
    must call it with the same ``demos`` and options. ``shard_layers``: each rank keeps
    and fits only its block of about L/K layers, the fitted factors gathered
    (:func:`~spectral_edit.editors.sea_fit.fit_from_arrays`; the same editor).

    Raises:
        ValueError: a layer spec out of range for the model (from
            :func:`~spectral_edit.hf.layers.parse_layers`), or a
            :class:`~spectral_edit.core.statistics.FitError` (bad ranks or scales, found
            before the capture; degenerate or non-finite activations, after it).
        LayerNotFoundError: the decoder layers cannot be found (pass ``layer_path``).
    """
    num_layers = len(find_decoder_layers(model, options.layer_path))
    chosen = capture_layers(options.layers, num_layers)
    check_fit_options(options, chosen, hidden_size_of(model))
    rank, size = world()
    mine = [demos[i] for i in share(len(demos), rank, size)] if size > 1 else demos
    activations, info = capture_activations(
        model,
        tokenizer,
        mine,
        options,
        batch_size=batch_size,
        progress=progress and rank == 0,
        prompt_format=prompt_format,
    )
    info = {**info, "world_size": size, **dict(metadata or {})}
    return fit_from_activations(
        activations,
        num_layers,
        options,
        metadata=info,
        distributed=size > 1,
        shard_layers=shard_layers,
    )


def capture_activations(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    demos: Sequence[Demonstration],
    options: SeaOptions = DEFAULT_OPTIONS,
    *,
    batch_size: int = 8,
    progress: bool = False,
    prompt_format: PromptFormat = PLAIN,
) -> tuple[DemoActivations, dict[str, Any]]:
    """The demonstrations' activations at the layers ``options.layers`` captures
    (:func:`~spectral_edit.hf.layers.capture_layers`: every layer for ``top-signature-L``),
    with ``options``' site, neutral and token, and what they were captured with: the
    model's identity, the neutral, token and site options, the prompt format and the
    capture time (what ``sea capture`` stores beside them; an editor's metadata).

    Raises:
        ValueError: a layer spec out of range for the model.
        LayerNotFoundError: the decoder layers cannot be found (pass ``layer_path``).
    """
    num_layers = len(find_decoder_layers(model, options.layer_path))
    layers = capture_layers(options.layers, num_layers)
    started = time.perf_counter()
    activations = capture_demos(
        model,
        tokenizer,
        demos,
        layers=layers,
        neutral=options.neutral,
        site=options.site,
        token=options.token,
        token_seed=options.token_seed,
        batch_size=batch_size,
        layer_path=options.layer_path,
        progress=progress,
        prompt_format=prompt_format,
    )
    info = {
        **model_metadata(model),
        "neutral": str(options.neutral),
        "token": str(options.token),
        **({"token_seed": options.token_seed} if options.token == Token.RANDOM else {}),
        "site": str(options.site),
        **prompt_format.record(),
        "capture_seconds": round(time.perf_counter() - started, 3),
    }
    return activations, info
