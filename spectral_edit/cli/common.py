"""What the command groups share: the consoles, the option types, errors as exit code 2,
and loading a model and an editor file."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from ..core.options import SeaOptions
from ..hf.model_names import DEFAULT_MODEL

console = Console()
err = Console(stderr=True)

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model", "-m", help=f"HF id or folder, .gguf file, or built-in name ({DEFAULT_MODEL})."
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Benchmark data folder (default: $SEA_DATA_DIR, else the user cache)."
    ),
]
DtypeOpt = Annotated[str | None, typer.Option(help="float32, bfloat16, float16 or auto.")]
DeviceMapOpt = Annotated[
    str | None, typer.Option("--device-map", help="accelerate device map, e.g. auto.")
]
EditorOpt = Annotated[Path | None, typer.Option("--editor", "-e", help="Editor .safetensors.")]
AlphaOpt = Annotated[float | None, typer.Option(help="Override the editor's strength.")]
LimitOpt = Annotated[int | None, typer.Option(help="Use only the first N items.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Sequences per forward pass.")]
OutFolderOpt = Annotated[Path, typer.Option(help="Output folder.")]


def choice_metavar(values: Iterable[str]) -> str:
    """``<a|b|c>``: how typer shows a choice option's valid values in ``--help``."""
    return "<" + "|".join(values) + ">"


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` to stderr; the exit (code 2) to raise."""
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=2)


@contextmanager
def failing_on(*errors: type[Exception]) -> Iterator[None]:
    """Turn ``errors`` raised in the block into :func:`fail` with their message."""
    try:
        yield
    except errors as error:
        raise fail(str(error)) from None


def sea_options(**options: Any) -> SeaOptions:
    """``SeaOptions(**options)``; an invalid value is :func:`fail`, the message naming the
    command-line option (``--pos-ratio must be in (0, 1], got 1.5``)."""
    try:
        return SeaOptions(**options)
    except ValueError as error:
        name, _, rest = str(error).partition(" ")
        if name in options:
            raise fail(f"--{name.replace('_', '-')} {rest}") from None
        raise fail(str(error)) from None


def data_errors() -> tuple[type[Exception], ...]:
    """What loading benchmark data raises for a missing or malformed file, or a bad
    request (an unknown source, fold or split size): :func:`failing_on` these."""
    from ..data import DataFileMissing, DataFormatError

    return DataFileMissing, DataFormatError, ValueError


def load(model: str, dtype: str | None, device_map: str | None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of :func:`~spectral_edit.hf.models.load_model`, with a
    spinner; a model that cannot be loaded is :func:`fail`."""
    from ..hf.model_names import ModelLoadError
    from ..hf.models import load_model

    with failing_on(ModelLoadError, OSError, ValueError), console.status(f"loading {model} …"):
        return load_model(model, dtype=dtype, device_map=device_map)


def load_editor(path: Path, model: Any = None, alpha: float | None = None) -> Any:
    """The editor in ``path`` (checked against ``model`` if given; strength ``alpha`` if
    given); an unreadable or unfitting file is :func:`fail`."""
    from ..editors.file_format import EditorFileError
    from ..editors.registry import load_editor as read_editor

    with failing_on(EditorFileError):
        editor = read_editor(path, model)
    return editor if alpha is None else editor.with_options(alpha=alpha)


def edited(model: Any, editor: Path | None, alpha: float | None) -> AbstractContextManager[Any]:
    """A context manager applying the editor file (or nothing) to the model."""
    return nullcontext() if editor is None else load_editor(editor, model, alpha).apply(model)
