"""What the command groups share: the consoles, the option types, errors as exit code 2,
and loading a model and an editor file."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from ..core.options import SeaOptions, Token, check_alpha
from ..hf.model_names import DEFAULT_MODEL

console = Console()
err = Console(stderr=True, soft_wrap=True)
"""Errors and warnings: not wrapped by rich (a path in a message stays whole to copy)."""

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model", "-m", help=f"HF id or folder, .gguf file, or built-in name ({DEFAULT_MODEL})."
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        exists=True,
        file_okay=False,
        help="Benchmark data folder, an existing one (default: $SEA_DATA_DIR, else the user "
        "cache).",
    ),
]
DtypeOpt = Annotated[str | None, typer.Option(help="float32, bfloat16, float16 or auto.")]
DeviceMapOpt = Annotated[
    str | None,
    typer.Option(
        "--device-map",
        help="accelerate device map: auto, a device, or a JSON object (or .json file) of "
        'module names to devices, "cpu" or "disk" (with --offload-folder).',
    ),
]
OffloadFolderOpt = Annotated[
    Path | None,
    typer.Option(
        "--offload-folder",
        file_okay=False,
        help="Folder for the weights --device-map puts on disk.",
    ),
]
EDITOR_HELP = (
    "Editor .safetensors file, or one on the Hugging Face Hub: "
    "hf://owner/repo/file.safetensors, or hf://owner/repo@revision/file.safetensors."
)
EditorOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--editor",
        "-e",
        help=EDITOR_HELP + " Repeat to compose editors (--editor A --editor B): they act in the "
        "order given, the first listed first where several edit one module; --alpha then "
        "scales every editor's own strength.",
    ),
]
"""The editors a command applies: ``None``, or the ``--editor`` values in order (one or
more; :func:`load_editor` and :func:`edited` take the list as it is)."""
EditorSources = str | Path | Sequence[str | Path]
"""An editor argument as the helpers below take it: one source, or several to compose."""
ALL = "all"
"""The word a limit option takes for "every item" (as does leaving the option out, where
its default is all)."""


def parse_alpha(text: str) -> float:
    """An ``--alpha`` value, checked as every editor checks its strength
    (:func:`~spectral_edit.core.options.check_alpha`: finite, ``|α| <= MAX_ALPHA``);
    ``x``, ``nan``, ``inf`` or ``1e308`` is a usage error naming the option (exit code 2),
    before any model is loaded."""
    try:
        return check_alpha(text.strip(), "alpha")
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


def count_parser(least: int = 1, *, or_all: bool = False) -> Callable[[str | int], int | None]:
    """The parser of a count option: a whole number ``>= least`` (and, with ``or_all``,
    the word :data:`ALL`, parsed as ``None``). ``0`` or ``-1`` never mean "all": they are a
    usage error naming the option, before anything runs."""
    rule = f"a whole number >= {least}" + (f", or {ALL!r} for every item" if or_all else "")

    def parse(given: str | int) -> int | None:
        text = str(given)  # click passes a default through the parser too
        if or_all and text.strip().lower() == ALL:
            return None
        try:
            value = int(text)
        except ValueError:
            raise typer.BadParameter(f"must be {rule}, got {text!r}") from None
        if value < least:
            raise typer.BadParameter(f"must be {rule}, got {value}")
        return value

    return parse


def count_option(help: str, *names: str, least: int = 1, or_all: bool = False) -> Any:
    """A ``typer.Option`` for a count (items, demonstrations, texts, tokens, a batch size),
    parsed by :func:`count_parser`: the one rule every such option of the CLI follows."""
    metavar = f"N>={least}" + (f"|{ALL}" if or_all else "")
    return typer.Option(
        *names, parser=count_parser(least, or_all=or_all), metavar=metavar, help=help
    )


AlphaOpt = Annotated[
    float | None,
    typer.Option(parser=parse_alpha, metavar="FLOAT", help="Override the editor's strength."),
]
LimitOpt = Annotated[
    int | None,
    count_option(f"Use only the first N items (default, or {ALL!r}: all).", or_all=True),
]
BatchOpt = Annotated[int, count_option("Sequences per forward pass.", "--batch-size")]
McFileOpt = Annotated[str, typer.Option(help="mc_task_v0.json (lm-eval) or mc_task.json.")]
TokenOpt = Annotated[
    Token,
    typer.Option(help="last, mean (over the answer) or random (one seeded answer token)."),
]
TokenSeedOpt = Annotated[
    int, count_option("Seed of the answer token --token random reads.", least=0)
]
OutFolderOpt = Annotated[Path, typer.Option(help="Output folder.")]
ChatTemplateOpt = Annotated[
    bool,
    typer.Option(
        "--chat-template",
        help="Prompt through the tokenizer's chat template: the question as a user turn with "
        "the generation prompt (no few-shot primer); the answer follows it.",
    ),
]
SystemPromptOpt = Annotated[
    str | None,
    typer.Option("--system-prompt", help="A system turn before the user turn (--chat-template)."),
]


def choice_metavar(values: Iterable[str]) -> str:
    """``<a|b|c>``: how typer shows a choice option's valid values in ``--help``."""
    return "<" + "|".join(values) + ">"


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` to stderr; the exit (code 2) to raise. The message is
    printed literally (it may quote a user's file: ``[/b]`` there is text, not markup)."""
    from rich.markup import escape

    err.print(f"[red]error:[/red] {escape(message)}")
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


def control_task_names(text: str, option: str = "--control-tasks") -> tuple[str, ...]:
    """A comma list of control tasks (blanks dropped), each a name of
    :data:`~spectral_edit.data.control.CONTROL_TASKS`: checked before anything runs, an
    unknown name is :func:`fail` naming ``option`` and listing the known tasks."""
    from ..data.control import CONTROL_TASKS

    names = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [t for t in names if t not in CONTROL_TASKS]
    if unknown or not names:
        given = f"unknown task(s) {', '.join(unknown)}" if unknown else "no task given"
        raise fail(f"{option}: {given}; known: {', '.join(sorted(CONTROL_TASKS))}")
    return names


def check_prompt_options(chat_template: bool, system_prompt: str | None) -> None:
    """Refuse ``--system-prompt`` without ``--chat-template`` (:func:`fail`), before any
    model is loaded."""
    if system_prompt is not None and not chat_template:
        raise fail("--system-prompt needs --chat-template (a system turn is part of a chat)")


def prompt_format(
    tokenizer: Any, model: str, chat_template: bool, system_prompt: str | None
) -> Any:
    """The :class:`~spectral_edit.demos.prompts.PromptFormat` the two shared options ask
    for: plain, or ``tokenizer``'s chat template with the system prompt; a tokenizer
    without a chat template (or one refusing the system prompt) is :func:`fail` naming
    ``--chat-template`` and ``model``."""
    from ..demos.prompts import PLAIN, ChatTemplateError, chat_format

    check_prompt_options(chat_template, system_prompt)
    if not chat_template:
        return PLAIN
    with failing_on(ChatTemplateError):
        return chat_format(tokenizer, system_prompt, model)


def too_long() -> AbstractContextManager[None]:
    """:func:`failing_on` :class:`~spectral_edit.hf.tokens.SequenceTooLong`: a text longer
    than the model's context is exit code 2 with the length and the limit, not a
    memory error."""
    from ..hf.tokens import SequenceTooLong

    return failing_on(SequenceTooLong)


def data_errors() -> tuple[type[Exception], ...]:
    """What loading benchmark data raises for a missing or malformed file, or a bad
    request (an unknown source, fold or split size): :func:`failing_on` these."""
    from ..data import DataFileMissing, DataFormatError

    return DataFileMissing, DataFormatError, ValueError


def load(
    model: str, dtype: str | None, device_map: str | None, offload_folder: Path | None = None
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of :func:`~spectral_edit.hf.models.load_model`, with a
    spinner (``device_map`` as :func:`~spectral_edit.hf.models.parse_device_map` reads
    it); a model that cannot be loaded is :func:`fail`."""
    from ..hf.model_names import ModelLoadError
    from ..hf.models import load_model, parse_device_map
    from ..util.extras import MissingExtraError

    with failing_on(ValueError):
        parsed = parse_device_map(device_map)
    errors = (ModelLoadError, MissingExtraError, OSError, ValueError)
    with failing_on(*errors), console.status(f"loading {model} …"):
        return load_model(model, dtype=dtype, device_map=parsed, offload_folder=offload_folder)


def companion_offload_folder(offload_folder: Path | None, name: str = "amateur") -> Path | None:
    """Where a second model a command loads (CD's amateur) keeps its disk-offloaded
    weights: the subfolder ``name`` of ``--offload-folder``, so that two models never
    share (and overwrite) offloaded weight files; ``None`` without ``--offload-folder``."""
    return None if offload_folder is None else offload_folder / name


def method_registry(
    names: Sequence[str],
    lm: Any,
    tokenizer: Any,
    amateur: str | None,
    dtype: str | None,
    device_map: str | None,
    offload_folder: Path | None,
) -> Any:
    """The methods registry of ``sea compare``/``sea tune``: with CD's ``--amateur``
    loaded (its offloaded weights apart: :func:`companion_offload_folder`) when ``cd`` is
    among ``names``, else the built-in one."""
    from ..experiments.methods import METHODS, with_amateur

    if amateur is None or "cd" not in names:
        return METHODS
    amateur_lm, amateur_tokenizer = load(
        amateur, dtype, device_map, companion_offload_folder(offload_folder)
    )
    with failing_on(ValueError):
        return with_amateur(METHODS, lm, tokenizer, amateur_lm, amateur_tokenizer, amateur)


def editor_sources(source: EditorSources) -> list[str | Path]:
    """The editor sources of an editor argument, in order (one for a single source)."""
    if isinstance(source, (str, Path)):
        return [source]
    return list(source)


def editor_label(source: EditorSources | None) -> str | list[str] | None:
    """How a run's record names its editor argument: ``None``, the one source as a string
    (as before compositions existed), or the list of sources in order."""
    if source is None:
        return None
    sources = [str(s) for s in editor_sources(source)]
    return sources[0] if len(sources) == 1 else sources


def load_editor(source: EditorSources, model: Any = None, alpha: float | None = None) -> Any:
    """The editor ``source`` names, a local file or an ``hf://`` Hub reference, resolved
    here for every command (:func:`~spectral_edit.editors.registry.load_editor`), checked
    against ``model`` if given, with strength ``alpha`` if given; several sources (the
    repeated ``--editor``) are composed in their order
    (:func:`~spectral_edit.editors.registry.load_editors`; ``alpha`` then scales every
    member's strength). An unreadable, unfitting or unreachable editor, or editors of
    different model shapes, is :func:`fail`; an editor fitted on another model of the same
    shape is used, with the library's warning (shown as ``warning:`` by the app)."""
    from ..editors.file_format import EditorFileError
    from ..editors.registry import load_editors

    with failing_on(EditorFileError):
        editor = load_editors(editor_sources(source), model)
    if alpha is None:
        return editor
    with failing_on(ValueError):  # a strength the editor itself refuses
        return editor.with_options(alpha=alpha)


def warn_prompt_format(source: EditorSources, editor: Any, prompts: Any) -> None:
    """The library's warning for every editor ``editor`` applies (a composition's members,
    each named by its ``--editor`` source, or by its member index in one composition file)
    that was fitted in another prompt format than ``prompts``
    (:func:`~spectral_edit.editors.file_format.warn_if_other_prompt_format`)."""
    from ..editors.composition import members_of
    from ..editors.file_format import warn_if_other_prompt_format

    sources = editor_sources(source)
    members = members_of(editor)
    for index, member in enumerate(members):
        if len(sources) == len(members):
            name: object = sources[index]
        else:  # one composition file, or a mix of files and compositions
            name = f"{', '.join(map(str, sources))} (member {index})"
        warn_if_other_prompt_format(name, member.metadata, prompts)


def edited(
    model: Any, editor: EditorSources | None, alpha: float | None, prompts: Any = None
) -> AbstractContextManager[Any]:
    """A context manager applying the editor (:func:`load_editor`; or nothing) to the model;
    with ``prompts`` (a :class:`~spectral_edit.demos.prompts.PromptFormat`), an editor
    fitted in another prompt format is used with the library's warning
    (:func:`~spectral_edit.editors.file_format.warn_if_other_prompt_format`)."""
    if editor is None:
        return nullcontext()
    loaded = load_editor(editor, model, alpha)
    if prompts is not None:
        warn_prompt_format(editor, loaded, prompts)
    return loaded.apply(model)
