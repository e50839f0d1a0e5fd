"""``sea export``: an editor folded into the model's weights, as a plain Hugging Face folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..hf.model_names import DEFAULT_MODEL
from .common import (
    EDITOR_HELP,
    AlphaOpt,
    DeviceMapOpt,
    DtypeOpt,
    ModelOpt,
    OffloadFolderOpt,
    console,
    fail,
    failing_on,
    load,
    load_editor,
)


def export(
    editor: Annotated[str, typer.Option("--editor", "-e", help=EDITOR_HELP)],
    out: Annotated[Path, typer.Option(help="The model folder to write (must not exist yet).")],
    model: ModelOpt = DEFAULT_MODEL,
    alpha: AlphaOpt = None,
    check: Annotated[
        bool,
        typer.Option(
            help="Load the folder back with plain AutoModelForCausalLM and compare its logits "
            "with the hooked model's before writing it."
        ),
    ] = True,
    prompt: Annotated[
        list[str] | None,
        typer.Option(help="A prompt to check the logits on (repeatable; default: three built in)."),
    ] = None,
    tolerance: Annotated[
        float, typer.Option(help="Largest absolute logit difference the check accepts.")
    ] = 1e-4,
    dtype: DtypeOpt = None,
    device_map: DeviceMapOpt = None,
    offload_folder: OffloadFolderOpt = None,
) -> None:
    """Fold an editor into the model's weights and write a standard Hugging Face model
    folder (loadable by AutoModelForCausalLM, vLLM, TGI); an editor that cannot be folded
    is refused with the reason and the options that would make it exportable."""
    from ..editors.export import DEFAULT_PROMPTS, ExportCheckFailed, ExportRefused, export_model
    from ..editors.hub import hub_reference
    from ..util.atomic import check_writable
    from ..util.identity import path_identity

    if out.exists():
        raise fail(f"--out {out} already exists; choose a new folder (or remove it)")
    check_writable(out, folder=True)  # an unwritable --out is refused before the model loads
    if not tolerance > 0:
        raise fail(f"--tolerance must be > 0, got {tolerance}")
    lm, tokenizer = load(model, dtype, device_map, offload_folder)
    loaded = load_editor(editor, lm, alpha)
    reference = hub_reference(editor, None, None)
    source = path_identity(editor) if reference is None else str(reference)
    prompts = tuple(prompt) if prompt else DEFAULT_PROMPTS
    with failing_on(ExportRefused, ExportCheckFailed), console.status(f"exporting to {out} …"):
        result = export_model(
            lm, tokenizer, loaded, out, check=check, prompts=prompts, tolerance=tolerance,
            source=source,
        )  # fmt: skip
    flags = ", ".join(f"{k}={v}" for k, v in result.plan.config_flags.items()) or "none"
    console.print(
        f"wrote {result.path}: {len(result.plan.folds)} layer(s) folded, config changes: {flags}"
    )
    if result.max_logit_diff is not None:
        console.print(
            f"check: max |Δlogit| = {result.max_logit_diff:.3g} vs the hooked model on "
            f"{result.prompts} prompt(s) (tolerance {tolerance:g})"
        )
    console.print(f"seconds: {result.seconds:.1f}")
    console.print(f"load it with: AutoModelForCausalLM.from_pretrained({str(out)!r})")
