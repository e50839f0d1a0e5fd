"""lm-evaluation-harness under an edit: lm-eval's own Hugging Face model with an editor.

:class:`SpectralEditLM` is lm-eval's ``HFLM`` (reused, not re-implemented: its batching,
tokenisation, caching and metrics are lm-eval's) with any editor of this library
attached, registered in lm-eval's model registry as ``spectral-edit``. Every lm-eval task
then runs under the edit::

    from spectral_edit.integrations.lm_eval import SpectralEditLM
    lm = SpectralEditLM(pretrained="gemma-3-270m", editor="truthful.safetensors", alpha=1.0)
    lm_eval.simple_evaluate(model=lm, tasks=["truthfulqa_mc2"])

or, once this module is imported, ``simple_evaluate(model="spectral-edit",
model_args={"pretrained": ..., "editor": ...})``. lm-eval 0.4.x has no plugin entry point
for models (its registry is a fixed mapping filled when ``lm_eval.models`` is imported),
so its own ``lm_eval`` command cannot find a third-party model; :func:`main` is that
command with this model registered (``python -m spectral_edit.integrations.lm_eval
--model spectral-edit --model_args pretrained=M,editor=E --tasks ...``), and ``sea
lm-eval`` calls it.

Invariants:

- the model is loaded by :func:`~spectral_edit.hf.models.load_model` (built-in names such
  as ``gemma-3-270m``, ``.gguf`` files, folders, Hub ids) and handed to ``HFLM`` as an
  instance with its tokenizer;
- the editor acts through the one hook machinery (``editor.apply(model)``) only while
  lm-eval's request methods (``loglikelihood``, ``loglikelihood_rolling``,
  ``generate_until``) run; the hooks are removed when each returns or raises, so between
  and after runs the model computes exactly what it computed before;
- without an editor (or at ``alpha=0``) the scores are those of lm-eval's plain ``hf``
  model on the same weights;
- editors restricted to some positions (SEA ``positions`` ``answer`` / ``generated``) are
  refused: lm-eval's batches do not carry each sequence's prompt boundary, so such an
  edit could not act where it was fitted to (:class:`UnsupportedEditorError`);
- an editor that records the prompt format it was fitted in (``sea fit
  --chat-template``) is checked against lm-eval's at the first request: lm-eval's
  ``--apply_chat_template`` / ``--system_instruction`` (seen through
  :meth:`SpectralEditLM.apply_chat_template`) against the editor's template and system
  prompt; a mismatch is an :class:`~spectral_edit.editors.file_format.EditorPromptWarning`
  naming lm-eval's options.

Needs the ``lmeval`` extra (``pip install 'spectral-edit[lmeval]'``).
"""

from __future__ import annotations

import inspect
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.options import Positions
from ..demos.prompts import PLAIN, ChatTemplateError, PromptFormat, chat_format
from ..editors.base import Editor
from ..editors.composition import members_of
from ..editors.file_format import warn_if_other_prompt_format
from ..editors.registry import load_editors
from ..hf.model_names import DEFAULT_MODEL
from ..hf.models import load_model
from ..util.extras import require

_huggingface = require(
    "lm_eval.models.huggingface", "lmeval", "the lm-evaluation-harness integration"
)
HFLM: Any = _huggingface.HFLM

MODEL_NAME = "spectral-edit"
"""The name of :class:`SpectralEditLM` in lm-eval's model registry (``--model``)."""

EXTRA = "lmeval"
"""The optional extra that installs lm-evaluation-harness."""

LOADER_ONLY_ARGS = (
    "backend",
    "subfolder",
    "parallelize",
    "max_memory_per_gpu",
    "max_cpu_memory",
    "offload_folder",
    "tp_plan",
    "peft",
    "delta",
    "autogptq",
    "gptqmodel",
    "gguf_file",
)
"""``HFLM`` arguments that only act when ``HFLM`` loads the model itself; this model is
loaded by :func:`~spectral_edit.hf.models.load_model`, so giving one is refused rather
than silently ignored."""

LM_EVAL_PROMPT_OPTIONS = ("--apply_chat_template", "--system_instruction")
"""How lm-eval's command names the chat template and the system prompt."""

_log = logging.getLogger(__name__)


class UnsupportedEditorError(ValueError):
    """An editor that cannot act as fitted under lm-evaluation-harness (the message names
    its source and what to do)."""


def check_editor_positions(editor: Editor, source: str) -> None:
    """Refuse an editor restricted to some positions (:class:`UnsupportedEditorError`).

    A position-restricted edit needs each sequence's prompt boundary (our scorer and
    generation set :func:`~spectral_edit.hf.positions.prompt_boundary`); lm-eval runs
    right-padded context-plus-continuation batches without it, where the edit would act
    on every position instead.
    """
    restricted = [
        getattr(member, "positions", Positions.ALL)
        for member in members_of(editor)
        if Positions.parse(getattr(member, "positions", Positions.ALL), "positions")
        is not Positions.ALL
    ]
    if not restricted:
        return
    positions = restricted[0]
    raise UnsupportedEditorError(
        f"{source}: the editor edits only the {str(positions)!r} positions, which needs each "
        "sequence's prompt/answer boundary; lm-evaluation-harness batches do not carry it, "
        "so the edit cannot act as fitted. Use an editor with positions 'all', e.g. "
        "load_editor(path).with_options(positions='all').save(new_path)"
    )


EditorArg = str | Path | Editor | Sequence[str | Path] | None
"""What :class:`SpectralEditLM` takes as its editor: none, one file or reference, an
editor, or several files to compose in their order."""


def source_of(editor: EditorArg) -> str:
    """How messages name the editor: its file or reference (several: comma-separated), or
    its type."""
    if editor is None or isinstance(editor, (str, Path)):
        return str(editor)
    if isinstance(editor, Editor):
        return f"editor {type(editor).__name__}"
    return ", ".join(str(source) for source in editor)


def _resolve_editor(editor: EditorArg, alpha: float | None, model: nn.Module) -> Editor | None:
    """The editor to apply (read from its file(s), composed in order, and checked against
    ``model``), at strength ``alpha`` if given (a composition: every member's strength
    scaled by it); ``alpha`` without an editor is a ``ValueError``."""
    if editor is None:
        if alpha is not None:
            raise ValueError(f"alpha={alpha!r} was given without an editor to apply it to")
        return None
    source = source_of(editor)
    if isinstance(editor, Editor):
        editor.check_model(model)
    elif isinstance(editor, (str, Path)):
        editor = load_editors([editor], model)  # a file, or any reference load_editor accepts
    else:
        editor = load_editors(list(editor), model)
    if alpha is not None:
        editor = editor.with_options(alpha=float(alpha))
    check_editor_positions(editor, source)
    return editor


def _target_device(device: str | None) -> torch.device | None:
    """Where to put the loaded model: ``None`` keeps it where it was loaded; a CUDA device
    when CUDA is unavailable falls back to the CPU, as lm-eval's ``hf`` model does for its
    default ``cuda:0``."""
    if device is None:
        return None
    target = torch.device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        _log.info("device %r requested but CUDA is not available: using the CPU", device)
        return torch.device("cpu")
    return target


def _check_hflm_args(kwargs: dict[str, Any]) -> None:
    """Refuse arguments ``HFLM`` would ignore for a model it did not load, and unknown
    ones (``HFLM`` would pass them to ``from_pretrained``, which is not called here)."""
    ignored = sorted(k for k in kwargs if k in LOADER_ONLY_ARGS and kwargs[k])
    known = set(inspect.signature(HFLM.__init__).parameters) - {"self", "kwargs"}
    unknown = sorted(k for k in kwargs if k not in known)
    if ignored or unknown:
        names = ", ".join(ignored + unknown)
        raise ValueError(
            f"{MODEL_NAME} model: argument(s) {names} not supported (the model is loaded by "
            "spectral_edit.load_model; supported: pretrained, editor, alpha, tokenizer, dtype, "
            "device, revision, trust_remote_code and lm-eval's hf scoring options such as "
            "batch_size, max_length, add_bos_token)"
        )


class SpectralEditLM(HFLM):
    """lm-eval's ``HFLM`` on a model loaded by this library, under an editor.

    Args:
        pretrained: built-in name, ``.gguf`` file, model folder or Hub id (see
            :func:`~spectral_edit.hf.models.load_model`), or an already loaded model
            (then give its ``tokenizer``; it is used as it is, and never modified but for
            the editor's hooks while requests run).
        editor: an editor file of any kind this library writes, or an editor, or a list
            of editor files (composed in their order,
            :mod:`spectral_edit.editors.composition`); ``None`` evaluates the unedited
            model.
        alpha: the editor's strength (default: the one stored in the editor).
        tokenizer: the tokenizer (default: the one loaded with ``pretrained``).
        dtype, revision, trust_remote_code: passed to ``load_model`` (only with a name).
        device: where to run (``None``: where the model was loaded; a CUDA device without
            CUDA: the CPU).
        **kwargs: ``HFLM``'s scoring options (``batch_size``, ``max_batch_size``,
            ``max_length``, ``add_bos_token``, ...).

    Raises:
        EditorFileError: the editor file is unreadable or does not fit the model.
        UnsupportedEditorError: the editor is position-restricted.
        ValueError: ``alpha`` without an editor, or an ``HFLM`` argument that only acts
            when ``HFLM`` loads the model itself.
    """

    def __init__(
        self,
        pretrained: str | nn.Module = DEFAULT_MODEL,
        editor: EditorArg = None,
        alpha: float | None = None,
        *,
        tokenizer: Any = None,
        dtype: str | torch.dtype | None = None,
        device: str | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
        **kwargs: Any,
    ) -> None:
        _check_hflm_args(kwargs)
        model: nn.Module
        if isinstance(pretrained, str):
            model, loaded_tokenizer = load_model(
                pretrained, dtype=dtype, revision=revision, trust_remote_code=trust_remote_code
            )
            tokenizer = loaded_tokenizer if tokenizer is None else tokenizer
        elif dtype is not None or revision is not None:
            raise ValueError("dtype and revision apply to a model name, not to a loaded model")
        else:
            model = pretrained
        target = _target_device(device)
        if target is not None:
            model.to(target)
        resolved = _resolve_editor(editor, alpha, model)
        super().__init__(pretrained=model, tokenizer=tokenizer, **kwargs)
        self.editor: Editor | None = resolved
        self.editor_source = source_of(editor)
        self._chat_system: tuple[str | None] | None = None  # (system turn,) once templated
        self._format_checked = False

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """lm-eval's chat templating (``--apply_chat_template``), noting that it is used and
        with which system turn (``--system_instruction``), for the prompt-format check."""
        system = next((t["content"] for t in chat_history if t.get("role") == "system"), None)
        self._chat_system = (system,)
        return str(super().apply_chat_template(chat_history, add_generation_prompt))

    def prompt_format(self) -> PromptFormat:
        """The prompt format lm-eval's requests have been built in so far: plain, or the
        tokenizer's chat template with the system turn seen."""
        if self._chat_system is None:
            return PLAIN
        try:
            return chat_format(self.tokenizer, self._chat_system[0])
        except ChatTemplateError:  # lm-eval templated with something we cannot name
            return PLAIN

    def _check_prompt_format(self) -> None:
        """Warn once, at the first request, when the editor was fitted in another prompt
        format than lm-eval's requests are in."""
        if self._format_checked or self.editor is None:
            return
        self._format_checked = True
        members = members_of(self.editor)
        for index, member in enumerate(members):
            source = self.editor_source if len(members) == 1 else f"{self.editor_source} ({index})"
            metadata = getattr(member, "metadata", {})
            formats = self.prompt_format(), LM_EVAL_PROMPT_OPTIONS
            warn_if_other_prompt_format(source, metadata, *formats)

    @contextmanager
    def edited(self) -> Iterator[nn.Module]:
        """The model under the editor inside the block (unedited without one); the hooks
        are removed on exit, also after an exception."""
        self._check_prompt_format()
        with nullcontext(self.model) if self.editor is None else self.editor.apply(self.model):
            yield self.model

    def loglikelihood(self, *args: Any, **kwargs: Any) -> Any:
        """lm-eval's ``loglikelihood`` under the editor."""
        with self.edited():
            return super().loglikelihood(*args, **kwargs)

    def loglikelihood_rolling(self, *args: Any, **kwargs: Any) -> Any:
        """lm-eval's ``loglikelihood_rolling`` under the editor."""
        with self.edited():
            return super().loglikelihood_rolling(*args, **kwargs)

    def generate_until(self, *args: Any, **kwargs: Any) -> Any:
        """lm-eval's ``generate_until`` under the editor."""
        with self.edited():
            return super().generate_until(*args, **kwargs)


def register() -> type[SpectralEditLM]:
    """Register :class:`SpectralEditLM` in lm-eval's model registry as
    :data:`MODEL_NAME` (idempotent; done when this module is imported)."""
    from lm_eval.api.registry import model_registry

    if model_registry.get(MODEL_NAME, None) is not SpectralEditLM:
        model_registry.register(MODEL_NAME, target=SpectralEditLM)
    return SpectralEditLM


def cli_arguments(
    argv: Sequence[str],
    editor: str | Path | Sequence[str | Path] | None = None,
    alpha: float | None = None,
) -> list[str]:
    """``argv`` of lm-eval's command with ``--model spectral-edit`` (added when absent)
    and, when given, ``editor`` and ``alpha`` merged into its ``--model_args`` (as one
    JSON ``--model_args``, which lm-eval merges with the others; paths may hold commas).
    Several editors (a composition) go as a JSON list; one as a string, as before.

    Raises:
        ValueError: ``argv`` names another ``--model``.
    """
    args = list(argv)
    model = _option_value(args, "--model", "-M")
    if model is not None and model != MODEL_NAME:
        raise ValueError(f"--model {model}: this command runs the {MODEL_NAME!r} model only")
    if model is None:
        args += ["--model", MODEL_NAME]
    extra: dict[str, Any] = {}
    if isinstance(editor, (str, Path)):
        extra["editor"] = str(editor)
    elif editor is not None:
        sources = [str(source) for source in editor]
        extra["editor"] = sources[0] if len(sources) == 1 else sources
    if alpha is not None:
        extra["alpha"] = float(alpha)
    if extra:
        args += ["--model_args", json.dumps(extra)]
    return args


def _option_value(args: Sequence[str], long: str, short: str) -> str | None:
    """The value given to an option (``--opt v``, ``--opt=v``, ``-o v``, ``-ov``), the
    last one where it is repeated; ``None`` when absent."""
    value = None
    for i, arg in enumerate(args):
        if arg in (long, short) and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(long + "="):
            value = arg.partition("=")[2]
        elif arg.startswith(short) and not arg.startswith("--") and len(arg) > len(short):
            value = arg[len(short) :]
    return value


def main(argv: Sequence[str] | None = None) -> None:
    """lm-eval's own command line (``lm_eval ...``), with :data:`MODEL_NAME` registered.

    ``argv``: its arguments (default ``sys.argv[1:]``). lm-eval's entry point reads
    ``sys.argv``, so it is set for the call and restored afterwards. Exits as lm-eval
    does (argparse errors: ``SystemExit(2)``).
    """
    from lm_eval.__main__ import cli_evaluate

    register()
    given = sys.argv[1:] if argv is None else list(argv)
    saved = sys.argv
    sys.argv = ["lm-eval", *given]
    try:
        cli_evaluate()
    finally:
        sys.argv = saved


if __name__ == "__main__":  # pragma: no cover - `python -m spectral_edit.integrations.lm_eval`
    from spectral_edit.integrations.lm_eval import main as _main  # the registered module

    _main()
else:
    register()
