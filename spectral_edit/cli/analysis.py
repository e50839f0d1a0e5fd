"""``sea capture`` (demonstrations → an activations file) and ``sea inspect`` (an editor's
signatures, spectra and ranks, and an embedding of captured activations: figures and JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..core.options import Neutral, Site, Token
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
    console,
    count_option,
    fail,
    failing_on,
    load,
    load_editor,
    prompt_format,
    sea_options,
)
from .tables import print_table


def capture(
    demos: Annotated[Path, typer.Option(help="Demonstrations (JSON Lines).")],
    out: Annotated[Path, typer.Option(help="Where to write the activations (.safetensors).")],
    model: ModelOpt = DEFAULT_MODEL,
    layers: Annotated[str, typer.Option(help="all, last-L, or a list like 10,11.")] = "all",
    site: Annotated[Site, typer.Option(help="residual or mlp.")] = Site.RESIDUAL,
    neutral: Annotated[Neutral, typer.Option(help="generate, prompt or given.")] = Neutral.GENERATE,
    token: TokenOpt = Token.LAST,
    token_seed: TokenSeedOpt = 0,
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
) -> None:
    """Capture the demonstrations' neutral, positive and negative activations into a
    safetensors file (for sea inspect --activations)."""
    from ..demos.activations_file import save_activations
    from ..demos.format import DemoFormatError, read_demos
    from ..experiments.pipeline import capture_activations, demos_file_metadata
    from ..util.atomic import check_writable

    with failing_on(DemoFormatError):
        records = read_demos(demos)
    options = sea_options(
        layers=layers,
        site=site,
        neutral=neutral,
        token=token,
        token_seed=token_seed,
        layer_path=layer_path,
    )
    check_prompt_options(chat_template, system_prompt)
    check_writable(out)
    lm, tokenizer = load(model, dtype, device_map, offload_folder)
    prompts = prompt_format(tokenizer, model, chat_template, system_prompt)
    with failing_on(ValueError, LookupError):
        activations, info = capture_activations(
            lm,
            tokenizer,
            records,
            options,
            batch_size=batch_size,
            progress=True,
            prompt_format=prompts,
        )
    save_activations(activations, out, {**info, **demos_file_metadata(demos)})
    n, count, d = activations.neutral.shape
    console.print(
        f"wrote the activations of {n} demonstrations at {count} layers (d = {d}) to {out}"
    )


def inspect(
    editor: Annotated[
        str, typer.Argument(help="SEA editor .safetensors file (or hf://owner/repo/file).")
    ],
    out: Annotated[Path, typer.Option(help="Folder for inspect.json and the figures.")] = Path(
        "runs/inspect"
    ),
    activations: Annotated[
        Path | None,
        typer.Option(help="Activations file (sea capture) for the embedding figure."),
    ] = None,
    layers: Annotated[
        str | None,
        typer.Option(
            help="Layers to embed, e.g. 10,11 (default: the edited layer of highest "
            "signature and the last edited layer)."
        ),
    ] = None,
    embedding: Annotated[str, typer.Option(help="auto (t-SNE, else PCA), tsne or pca.")] = "auto",
    max_points: Annotated[
        int, count_option("Demonstrations embedded per set (the first ones).")
    ] = 200,
    seed: Annotated[int, typer.Option(help="t-SNE seed.")] = 0,
) -> None:
    """An editor's signature per layer, the spectrum of Ω+ and Ω− per layer and the
    ranks (and with --activations a 2-D embedding of positive, negative, neutral and
    edited neutral activations): PNG figures and their numbers in inspect.json."""
    from ..demos.activations_file import ActivationsFileError, load_activations
    from ..editors.sea import SpectralEditor
    from ..experiments.inspection import InspectionError, inspect_editor, write_inspection
    from ..hf.layers import parse_layers
    from ..util.extras import MissingExtraError

    loaded = load_editor(editor)
    if not isinstance(loaded, SpectralEditor):
        raise fail(f"{editor}: sea inspect reads SEA editors, not {type(loaded).__name__}")
    captured = None
    if activations is not None:
        with failing_on(ActivationsFileError):
            captured, _ = load_activations(activations)
    with failing_on(ValueError):
        chosen = None if layers is None else parse_layers(layers, loaded.num_layers)
    with failing_on(InspectionError, MissingExtraError):
        report = inspect_editor(
            loaded,
            captured,
            layers=chosen,
            embedding=embedding,
            max_points=max_points,
            seed=seed,
        )
        written = write_inspection(report, out)
    rows = [
        [e["layer"], e["pos_rank"], e["neg_rank"], _number(e.get("signature"))]
        for e in report["layers"]
    ]
    print_table(f"editor {editor}", ["layer", "k+", "k-", "signature"], rows)
    for panel in report["embeddings"]:
        why = f" ({panel['reason']})" if panel["reason"] else ""
        console.print(f"layer {panel['layer']}: {panel['method']} embedding{why}")
    console.print("wrote " + ", ".join(str(p) for p in written.values()))


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"
