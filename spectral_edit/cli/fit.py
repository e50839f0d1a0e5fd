"""``sea fit`` (demonstrations → SEA editor file) and ``sea info`` (what an editor file holds)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer

from ..core.options import Feature, Merge, Neutral, Positions, Site, Token
from ..hf.model_names import DEFAULT_MODEL
from .common import (
    BatchOpt,
    ChatTemplateOpt,
    DeviceMapOpt,
    DtypeOpt,
    ModelOpt,
    OffloadFolderOpt,
    SystemPromptOpt,
    TokenOpt,
    TokenSeedOpt,
    check_prompt_options,
    choice_metavar,
    fail,
    failing_on,
    load,
    load_editor,
    prompt_format,
    sea_options,
)
from .tables import print_fields, print_table


def _feature(value: str) -> Feature:
    # Feature.parse, not typer's own choice check: it also takes TANH or squared_exponential
    return Feature.parse(value, "--feature")


def _scales(text: str | None) -> tuple[float, ...] | None:
    """``--feature-scales`` as numbers, each > 0."""
    if text is None:
        return None
    try:
        scales = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise fail(f"--feature-scales: not a list of numbers: {text!r}") from None
    if not all(x > 0 for x in scales):
        raise fail(f"--feature-scales: every scale must be > 0, got {text!r}")
    return scales


def fit(
    demos: Annotated[Path, typer.Option(help="Demonstrations (JSON Lines).")],
    out: Annotated[Path, typer.Option(help="Where to write the editor (.safetensors).")],
    model: ModelOpt = DEFAULT_MODEL,
    layers: Annotated[str, typer.Option(help="last-L, all, or a list like 10,11.")] = "last-8",
    pos_ratio: Annotated[float, typer.Option(help="Energy ratio for k+.")] = 0.99,
    neg_ratio: Annotated[float, typer.Option(help="Energy ratio for k-.")] = 0.99,
    pos_rank: Annotated[int | None, typer.Option(help="Fixed k+ (overrides the ratio).")] = None,
    neg_rank: Annotated[int | None, typer.Option(help="Fixed k- (overrides the ratio).")] = None,
    site: Annotated[Site, typer.Option(help="residual or mlp.")] = Site.RESIDUAL,
    neutral: Annotated[Neutral, typer.Option(help="generate, prompt or given.")] = Neutral.GENERATE,
    token: TokenOpt = Token.LAST,
    token_seed: TokenSeedOpt = 0,
    centered: Annotated[bool, typer.Option(help="Centre the cross-covariances.")] = False,
    feature: Annotated[
        Feature,
        typer.Option(
            parser=_feature,
            metavar=choice_metavar(Feature.values()),
            help="linear, tanh, elu or squared-exponential (Φ-SEA).",
        ),
    ] = Feature.LINEAR,
    feature_scales: Annotated[
        str | None,
        typer.Option(
            help="Φ-SEA scales, comma-separated, one per fitted layer "
            "(default: each layer's neutral RMS)."
        ),
    ] = None,
    merge: Annotated[Merge, typer.Option(help="norm or mean.")] = Merge.NORM,
    alpha: Annotated[float, typer.Option(help="Edit strength (0 = no edit).")] = 1.0,
    center_edit: Annotated[
        bool,
        typer.Option(
            help="Centred edit: project h − μ (μ = the fit's neutral mean) and add μ back."
        ),
    ] = False,
    positions: Annotated[
        Positions,
        typer.Option(
            help="Positions edited: all (the paper), answer (the prompt's last token on) "
            "or generated (after the prompt)."
        ),
    ] = Positions.ALL,
    layer_path: Annotated[
        str | None,
        typer.Option(help="Module path of the decoder layers, if not found automatically."),
    ] = None,
    batch_size: BatchOpt = 8,
    chat_template: ChatTemplateOpt = False,
    system_prompt: SystemPromptOpt = None,
    dtype: DtypeOpt = None,
    device_map: DeviceMapOpt = None,
    offload_folder: OffloadFolderOpt = None,
    shard_layers: Annotated[
        bool,
        typer.Option(
            "--shard-layers",
            help="Under torchrun: each process keeps and fits only its share of the layers "
            "(the fit's memory per process ÷ processes); the same editor.",
        ),
    ] = False,
) -> None:
    """Fit a SEA editor on a demonstrations file (with --chat-template: prompts not yet in
    the template become its user turn; the editor records the template)."""
    import torch

    from ..core.distributed import process_group_from_environment
    from ..demos.format import DemoFormatError, read_demos
    from ..experiments.pipeline import demos_file_metadata, fit_editor
    from ..util.atomic import check_writable
    from ..util.report import RANK_HEADERS, ranks_rows

    with failing_on(DemoFormatError):
        records = read_demos(demos)
    options = sea_options(
        layers=layers,
        neutral=neutral,
        token=token,
        token_seed=token_seed,
        site=site,
        layer_path=layer_path,
        pos_ratio=pos_ratio,
        neg_ratio=neg_ratio,
        pos_rank=pos_rank,
        neg_rank=neg_rank,
        centered=centered,
        feature=feature,
        feature_scales=_scales(feature_scales),
        merge=merge,
        alpha=alpha,
        center_edit=center_edit,
        positions=positions,
    )
    check_prompt_options(chat_template, system_prompt)
    check_writable(out)  # refuse an unwritable --out before the fit, not after
    with process_group_from_environment() as (rank, size):  # torchrun: one rank each
        if size > 1 and device_map is None and torch.cuda.is_available():
            device_map = f"cuda:{torch.cuda.current_device()}"
        lm, tokenizer = load(model, dtype, device_map, offload_folder)
        prompts = prompt_format(tokenizer, model, chat_template, system_prompt)
        with failing_on(ValueError, LookupError):
            editor = fit_editor(
                lm,
                tokenizer,
                records,
                options,
                batch_size=batch_size,
                progress=True,
                metadata=demos_file_metadata(demos),
                prompt_format=prompts,
                shard_layers=shard_layers,
            )
    if rank != 0:
        return  # rank 0 writes the editor of every rank's demonstrations
    editor.save(out)
    ranks = f" over {size} processes" if size > 1 else ""
    ranks += ", layers sharded" if size > 1 and shard_layers else ""
    print_table(
        f"editor {out}: {len(records)} demonstrations{ranks}",
        RANK_HEADERS,
        ranks_rows(editor.metadata),
    )


def info(
    editor: Annotated[
        str,
        typer.Argument(
            help="Editor .safetensors file, or hf://owner/repo/file.safetensors "
            "(hf://owner/repo@revision/file.safetensors) on the Hugging Face Hub."
        ),
    ],
) -> None:
    """Show an editor's options, ranks and layer signature values (a local file or one on
    the Hugging Face Hub)."""
    from ..editors.sea import SpectralEditor
    from ..util.report import RANK_HEADERS, ranks_rows

    loaded = load_editor(editor)
    if not isinstance(loaded, SpectralEditor):
        print_fields(f"{editor} ({type(loaded).__name__})", _baseline_fields(loaded))
        return
    meta = dict(loaded.metadata)
    rows = {
        "model": meta.get("model"),
        "model revision": meta.get("model_revision"),
        "architecture": meta.get("model_type"),
        "hidden size": loaded.hidden_size,
        "model layers": loaded.num_layers,
        "fitted layers": ",".join(map(str, loaded.layers)),
        "edited layers": ",".join(map(str, loaded.active_layers)),
        "site": loaded.site,
        "merge": loaded.merge,
        "alpha": loaded.alpha,
        "centred edit": loaded.center_edit,
        "positions": loaded.positions,
        "feature": loaded.feature,
        "centered": meta.get("centered"),
        "ratios (+/-)": f"{meta.get('pos_ratio')} / {meta.get('neg_ratio')}",
        "demonstrations": meta.get("n_demonstrations"),
        "demonstrations file": _named_file(meta),
        "neutral": meta.get("neutral"),
    }
    print_fields(str(editor), rows.items())
    print_table("ranks and signature per layer", RANK_HEADERS, ranks_rows(meta))


def _named_file(meta: dict[str, Any]) -> str | None:
    """``name (sha256 <first 12 hex>)`` of the recorded demonstrations file, if any."""
    name, digest = meta.get("demonstrations_file"), meta.get("demonstrations_sha256")
    if name is None:
        return None
    return f"{name} (sha256 {str(digest)[:12]})" if digest else str(name)


def _baseline_fields(editor: Any) -> list[tuple[str, Any]]:
    """A baseline editor's scalar options and scalar metadata, as ``(name, value)`` rows."""
    rows: list[tuple[str, Any]] = []
    for f in dataclasses.fields(editor):
        value = getattr(editor, f.name)
        if f.name == "metadata":
            rows += [
                (key, item)
                for key, item in value.items()
                if isinstance(item, (str, int, float, bool)) or item is None
            ]
        elif isinstance(value, (str, int, float)) or value is None:
            rows.append((f.name, value))
        elif isinstance(value, tuple) and all(isinstance(v, (int, str)) for v in value):
            rows.append((f.name, ",".join(map(str, value))))
    return rows
