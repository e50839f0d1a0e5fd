"""Export an edited model for serving: the edit folded into stock weights, written as a
plain Hugging Face model folder (``AutoModelForCausalLM.from_pretrained(folder)``, no
``trust_remote_code``; so vLLM, TGI and the llama.cpp converters load it too).

What folds (docs/serving.md has the maths), each exactly, into the weights listed:

- linear SEA with the ``mean`` merge at the MLP site, all positions: the edit is the matrix
  ``A = (1 − α) I + α (P+ + P-)/2`` on the MLP's output, folded into its output projection
  (``W' = A W``); the centred edit adds ``α (I − M) μ``, which needs a bias there;
- mean difference and PCA vectors (a shift ``+ α v``): the MLP output projection's bias, at
  the MLP site, or at the residual site where the MLP's output joins the residual stream
  as the layer's last step (not under a post-MLP norm); LEACE (affine) at the MLP site;
- ITI (a shift of the heads entering the attention output projection): its bias ``b + W s``;
- LoRA: merged into each adapted layer by peft's own merge.

A bias the layer lacks is given by a config flag (``mlp_bias``, ``attention_bias``) only
where the architecture has one that plain ``AutoModelForCausalLM`` loads; otherwise, and for
every edit that is not affine in one layer's output (the norm merge, Φ-SEA, SEA at the
residual site, position-restricted edits), :func:`plan_export` raises
:class:`~.fold.ExportRefused` saying why and which options would make it exportable.

The folder holds the weights (safetensors), the config, the generation config, the
tokenizer and :data:`EXPORT_FILE`, a JSON record of what was folded: the editor's kind,
options and content hash (the ``content_sha256`` its file holds), its source, the base
model's identity, the layers changed and the logit check. It is written atomically and,
unless ``check=False``, only after the folder, loaded back with plain
``AutoModelForCausalLM``, gives the hooked model's logits on the check prompts.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import stat
import time
from collections.abc import Mapping, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from ..hf.devices import onloaded
from ..hf.layers import text_config
from ..hf.model_names import NAME_ATTR, REVISION_ATTR, TRANSFORMERS_LOCK
from ..hf.tokens import input_device
from ..util.atomic import OutputError, atomic_directory, check_writable
from ..util.report import write_json
from .base import Editor
from .export_plan import ExportRefused, FoldPlan, plan_export
from .file_format import editor_header, model_identity

__all__ = [
    "DEFAULT_PROMPTS",
    "EXPORT_FILE",
    "ExportCheckFailed",
    "ExportRefused",
    "ExportResult",
    "FoldPlan",
    "export_model",
    "plan_export",
]

EXPORT_FILE = "spectral_edit_export.json"
"""The record of what was folded, in the exported folder."""
EXPORT_FORMAT = "spectral-edit/export"

DEFAULT_PROMPTS = (
    "The capital of France is",
    "Q: What happens if you swallow gum?\nA:",
    "def add(a, b):\n    return",
)
"""The prompts the exported model's logits are checked on (every position of each)."""


class ExportCheckFailed(RuntimeError):
    """The exported folder, loaded back, does not reproduce the hooked model (nothing was
    written)."""


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """An export's outcome: the folder, the plan, the largest absolute logit difference to
    the hooked model on ``prompts`` check prompts (``None`` unchecked), the seconds taken
    and the record written to :data:`EXPORT_FILE`."""

    path: Path
    plan: FoldPlan
    max_logit_diff: float | None
    prompts: int
    seconds: float
    record: Mapping[str, Any]


# ------------------------------------------------------------------------ writing
def export_model(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    editor: Editor,
    out: str | Path,
    *,
    check: bool = True,
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    tolerance: float = 1e-4,
    source: str | Mapping[str, Any] | None = None,
) -> ExportResult:
    """Fold ``editor`` into ``model``'s weights and write the model folder ``out``
    (atomically; ``model`` itself is not changed). The weights keep the model's dtype. A
    model dispatched by accelerate with offloaded weights (``device_map`` with ``"cpu"`` or
    ``"disk"``) is exported too: its weights are brought into CPU memory while the folder
    is written (:func:`~spectral_edit.hf.devices.onloaded`), so they must fit there.

    ``check``: before the folder is moved into place, load it with plain
    ``AutoModelForCausalLM`` and compare its logits with the hooked model's on every
    position of ``prompts``; more than ``tolerance`` apart (absolute, as float32) is
    :class:`ExportCheckFailed` and nothing is written. ``source``: the editor's identity to
    record (a file's :func:`~spectral_edit.util.identity.path_identity`, an ``hf://``
    reference), default none.

    Raises:
        ExportRefused: the edit cannot be folded (see :func:`plan_export`).
        OutputError: ``out`` exists or cannot be written (checked before any work).
    """
    start = time.perf_counter()
    target = Path(out)
    if target.exists():
        raise OutputError(
            f"cannot write {target}: it already exists. Choose another output folder (or "
            "remove it) and rerun."
        )
    check_writable(target, folder=True)
    if check and not prompts:
        raise ValueError("the export check needs at least one prompt")
    with onloaded(model):  # a model offloaded by accelerate: its weights read for real
        plan = plan_export(model, editor)
    with atomic_directory(target) as folder:
        with onloaded(model):  # out again for the check: the hooked model runs as it is
            _write_model(model, tokenizer, plan, folder)
        worst = _check(model, tokenizer, editor, folder, prompts) if check else None
        if worst is not None and not worst <= tolerance:
            raise ExportCheckFailed(
                f"the exported model's logits differ from the hooked model's by up to "
                f"{worst:.3g} (> {tolerance:g}) on the check prompts; nothing was written. "
                "In 16-bit weights rounding alone differs this much: export from a float32 "
                "model (--dtype float32, the CPU default) or allow a larger --tolerance"
            )
        seconds = time.perf_counter() - start
        record = _record(model, editor, plan, source, worst, len(prompts), tolerance, seconds)
        write_json(folder / EXPORT_FILE, record)
    return ExportResult(
        path=target,
        plan=plan,
        max_logit_diff=worst,
        prompts=len(prompts) if check else 0,
        seconds=time.perf_counter() - start,
        record=record,
    )


def _write_model(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, plan: FoldPlan, folder: Path
) -> None:
    """The model's state with the plan's tensors, its config with the plan's flags (and no
    spectral-edit loader attributes), its generation config and the tokenizer."""
    state = dict(model.state_dict())
    state.update(plan.tensors)
    saver: Any = model  # a PreTrainedModel (torch's Module typing does not know it)
    with torch.no_grad():
        saver.save_pretrained(folder, state_dict=state)
    config: Any = copy.deepcopy(saver.config)
    for flag, value in plan.config_flags.items():
        setattr(text_config(config), flag, value)
    for attribute in (NAME_ATTR, REVISION_ATTR):
        if hasattr(config, attribute):
            delattr(config, attribute)
    config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    _usual_permissions(folder)


def _usual_permissions(folder: Path) -> None:
    """Give every file in ``folder`` the permissions a new file gets here (``0o666`` less
    the umask; safetensors writes its files ``0o600``), as every writer of the project does."""
    probe = folder / ".permissions-probe"
    fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
        probe.unlink()
    for file in folder.rglob("*"):
        if file.is_file():
            os.chmod(file, mode)


def _check(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    editor: Editor,
    folder: Path,
    prompts: Sequence[str],
) -> float:
    """The largest absolute logit difference (float32) between the hooked ``model`` and
    the folder loaded with plain ``AutoModelForCausalLM``, over every position of
    ``prompts``; :class:`ExportCheckFailed` if the folder's tokenizer tokenises otherwise."""
    device = input_device(model)
    dtype = next(model.parameters()).dtype
    with TRANSFORMERS_LOCK:
        exported = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
        exported_tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    exported = exported.to(device).eval()  # type: ignore[arg-type]
    worst = 0.0
    try:
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
            theirs = exported_tokenizer(prompt, return_tensors="pt")["input_ids"]
            if not torch.equal(ids, theirs):
                raise ExportCheckFailed(
                    f"the exported tokenizer encodes {prompt!r} otherwise than the model's"
                )
            with torch.no_grad():
                with editor.apply(model):
                    hooked = model(input_ids=ids.to(device)).logits.float()
                folded = exported(input_ids=ids.to(device)).logits.float()
            worst = max(worst, float((hooked - folded).abs().max()))
    finally:
        del exported
    return worst


def _version() -> str | None:
    try:
        return importlib_metadata.version("spectral-edit")
    except importlib_metadata.PackageNotFoundError:
        return None


def _record(
    model: nn.Module,
    editor: Editor,
    plan: FoldPlan,
    source: str | Mapping[str, Any] | None,
    worst: float | None,
    prompts: int,
    tolerance: float,
    seconds: float,
) -> dict[str, Any]:
    """The JSON record of :data:`EXPORT_FILE` (see the module docstring); no local paths."""
    header = editor_header(editor)
    options = {
        k: v
        for k, v in header.items()
        if k not in ("format", "format_version", "content_sha256", "metadata")
    }
    return {
        "format": EXPORT_FORMAT,
        "format_version": 1,
        "spectral_edit_version": _version(),
        "editor": {
            "kind": header["format"],
            "format_version": header["format_version"],
            "content_sha256": header["content_sha256"],
            "source": dict(source) if isinstance(source, Mapping) else source,
            "options": options,
        },
        "base_model": model_identity(model),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "config_changes": dict(plan.config_flags),
        "folds": list(plan.folds),
        "check": None
        if worst is None
        else {"prompts": prompts, "max_abs_logit_diff": worst, "tolerance": tolerance},
        "seconds": round(seconds, 3),
    }
