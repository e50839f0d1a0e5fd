"""Load a causal LM and its tokenizer: Hub id, local folder, ``.gguf`` file or built-in name.

:func:`load_model` accepts

- a Hugging Face Hub id (``"Qwen/Qwen2.5-0.5B"``) or a local model folder;
- a path to a ``.gguf`` file;
- a built-in name from :data:`~spectral_edit.hf.model_names.BUILTIN_MODELS`
  (:data:`~spectral_edit.hf.model_names.DEFAULT_MODEL` = ``"gemma-3-270m"``, a Q4_K_M
  GGUF shipped as a Python package).

How a name is sorted into these kinds, and the errors raised, are in
:mod:`~spectral_edit.hf.model_names`. A GGUF (built-in or not) is converted once into a
cached Hugging Face folder and read from there (:mod:`~spectral_edit.hf.gguf_cache`); the
conversion needs the ``gguf`` extra, a Hub id or a folder does not.

:func:`model_name_of` and :func:`resolve_revision` give the name and exact revision to
record with results.

A model larger than one device loads dispatched by accelerate (``device_map``: ``"auto"``
or an explicit map of module names to devices, ``"cpu"`` or ``"disk"``, with
``offload_folder`` for the disk; :func:`parse_device_map` reads the command line's
form). Editors, capture and the scorer work on such a model as on one in memory
(docs/scaling.md, "Models larger than one device").
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ..util.extras import require
from .gguf_cache import cache_root, ensure_converted, gguf_source
from .model_names import (
    DEFAULT_MODEL,
    NAME_ATTR,
    REVISION_ATTR,
    TRANSFORMERS_LOCK,
    HubUnreachableError,
    ModelLoadError,
    ModelNotFoundError,
    classify,
)

__all__ = [
    "load_model",
    "model_name_of",
    "parse_device_map",
    "parse_dtype",
    "resolve_revision",
]


# --------------------------------------------------------------------------- dtype


_DTYPE_ALIASES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}
_FLOAT_DTYPES = frozenset(_DTYPE_ALIASES.values())


def _uses_accelerator(device_map: str | dict | torch.device | None) -> bool:
    """Whether ``device_map`` puts any weights on a GPU/accelerator."""
    if device_map is None:
        return False
    if isinstance(device_map, dict):
        return any(str(v) not in ("cpu", "disk", "meta") for v in device_map.values())
    text = str(device_map)
    if text in ("auto", "balanced", "balanced_low_0", "sequential"):
        mps = getattr(torch.backends, "mps", None)
        return torch.cuda.is_available() or bool(mps and mps.is_available())
    return text != "cpu"


def parse_dtype(
    dtype: str | torch.dtype | None, *, device_map: str | dict | torch.device | None = None
) -> torch.dtype | Literal["auto"]:
    """Normalise a dtype argument for ``from_pretrained``.

    Accepts ``"float32"/"fp32"``, ``"bfloat16"/"bf16"``, ``"float16"/"fp16"``, ``"auto"``
    (the checkpoint's own dtype) or a floating ``torch.dtype``. ``None`` means float32
    when the model stays on the CPU and ``"auto"`` when ``device_map`` uses an accelerator.
    """
    if dtype is None:
        return "auto" if _uses_accelerator(device_map) else torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in _FLOAT_DTYPES:
            raise ValueError(f"unsupported model dtype {dtype}; use float32, bfloat16 or float16")
        return dtype
    if isinstance(dtype, str):
        key = dtype.strip().lower().removeprefix("torch.")
        if key == "auto":
            return "auto"
        if key in _DTYPE_ALIASES:
            return _DTYPE_ALIASES[key]
    choices = ", ".join([*_DTYPE_ALIASES, "auto"])
    raise ValueError(f"unknown dtype {dtype!r}; choose one of: {choices}")


def parse_device_map(text: str | None) -> str | dict[str, Any] | None:
    """A ``device_map`` as the command line gives it: ``None``; a JSON object of module
    names to devices (``{"model.layers.0": "disk", "lm_head": "cpu", ...}``) or a
    ``.json`` file holding one; else the text itself (``auto``, ``cpu``, ``cuda:0``...).

    Raises:
        ValueError: malformed JSON, or a JSON value that is not an object of devices.
    """
    if text is None:
        return None
    source = text.strip()
    if source.endswith(".json") and not source.startswith("{"):
        try:
            source = Path(source).read_text(encoding="utf-8")
        except OSError as error:
            raise ValueError(f"device map file {text}: {error}") from None
    elif not source.startswith("{"):
        return source
    try:
        value = json.loads(source)
    except json.JSONDecodeError as error:
        raise ValueError(f"device map {text!r} is not valid JSON: {error}") from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, (str, int)) for k, v in value.items()
    ):
        raise ValueError(
            f"device map {text!r} must be a JSON object of module names to devices "
            '(e.g. {"model.layers.0": "disk", "lm_head": "cpu"})'
        )
    return value


def _offloads_to_disk(device_map: str | dict | None) -> bool:
    return isinstance(device_map, dict) and any(str(v) == "disk" for v in device_map.values())


# --------------------------------------------------------------------------- loading


def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _translate_hub_error(name: str, exc: BaseException) -> ModelLoadError | None:
    """A clear error for Hub failures, or ``None`` to re-raise ``exc`` unchanged."""
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    alternatives = (
        f"pass a local model folder, a .gguf file, or the built-in name {DEFAULT_MODEL!r}"
    )
    chain = _exception_chain(exc)
    if any(isinstance(e, GatedRepoError) for e in chain):
        return ModelLoadError(f"{name!r} is a gated Hub repository; log in with `hf auth login`")
    if any(isinstance(e, RevisionNotFoundError) for e in chain):
        return ModelLoadError(f"the requested revision of {name!r} does not exist on the Hub")
    if any(isinstance(e, RepositoryNotFoundError) for e in chain):
        return ModelNotFoundError(
            f"{name!r} is not a local folder and not a model on the Hugging Face Hub; "
            f"{alternatives}"
        )
    unreachable = (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError)
    if any(isinstance(e, unreachable) for e in chain) or "couldn't connect" in str(exc):
        return HubUnreachableError(
            f"cannot load {name!r}: the Hugging Face Hub cannot be reached (or offline mode is "
            f"on) and the model is not in the local Hugging Face cache; {alternatives}"
        )
    return None


def _hub_revision(
    name: str, revision: str | None, local_files_only: bool
) -> tuple[Any, str | None]:
    """``(revision to pass on, commit hash or None)``; best effort, never raises."""
    try:
        from transformers.utils.hub import resolve_revision as hf_resolve_revision

        resolved = hf_resolve_revision(name, revision, local_files_only=local_files_only)
    except Exception:  # noqa: BLE001 - best effort, the load itself reports real problems
        resolved = revision
    commit = getattr(resolved, "resolved", None)
    if commit is None and revision is not None and re.fullmatch(r"[0-9a-f]{40}", revision):
        commit = revision
    return resolved, commit


def _from_pretrained(
    location: str,
    *,
    dtype: torch.dtype | Literal["auto"],
    device_map: str | dict | None,
    revision: Any,
    trust_remote_code: bool,
    local_files_only: bool,
    offload_folder: str | Path | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    dispatch: dict[str, Any] = {}
    if offload_folder is not None:
        dispatch["offload_folder"] = str(offload_folder)
    common: dict[str, Any] = {
        "trust_remote_code": trust_remote_code,
        "local_files_only": local_files_only,
    }
    if revision is not None:
        common["revision"] = revision
    with TRANSFORMERS_LOCK:
        tokenizer = AutoTokenizer.from_pretrained(location, **common)
        model = AutoModelForCausalLM.from_pretrained(
            location, dtype=dtype, device_map=device_map, **dispatch, **common
        )
    return model, tokenizer


def load_model(
    name_or_path: str,
    *,
    dtype: str | torch.dtype | None = None,
    device_map: str | dict | None = None,
    revision: str | None = None,
    cache_dir: Path | None = None,
    trust_remote_code: bool = False,
    local_files_only: bool = False,
    offload_folder: str | Path | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` in eval mode.

    Args:
        name_or_path: built-in name (see
            :data:`~spectral_edit.hf.model_names.BUILTIN_MODELS`), ``.gguf`` path, local
            model folder, or Hugging Face Hub id.
        dtype: see :func:`parse_dtype`; default float32 on CPU.
        device_map: passed to ``from_pretrained`` (needs the ``accelerate`` extra), e.g.
            ``"auto"``, or a map of module names to devices, ``"cpu"`` or ``"disk"``
            (:func:`parse_device_map` reads the command line's text).
        revision: Hub branch/tag/commit; only for Hub ids.
        cache_dir: root of spectral-edit's cache of converted GGUF models (see
            :func:`~spectral_edit.hf.gguf_cache.cache_root`). Hub downloads use Hugging
            Face's own cache.
        trust_remote_code: passed to ``from_pretrained`` (Hub ids and folders).
        local_files_only: do not contact the Hub (use its local cache only).
        offload_folder: where accelerate keeps the weights a ``device_map`` puts on
            ``"disk"`` (required then; ``"auto"`` uses the disk only where the devices
            and the CPU are full).

    The tokenizer gets ``pad_token = eos_token`` if it has no pad token (that instance
    only). Raises :class:`ModelNotFoundError` for a missing path or unknown name,
    :class:`HubUnreachableError` when the Hub is needed but cannot be reached, and
    :class:`~spectral_edit.hf.model_names.MissingGgufExtraError` for a built-in name or
    ``.gguf`` file without the ``gguf`` extra (all three are :class:`ModelLoadError`).
    """
    kind, value = classify(name_or_path)
    torch_dtype = parse_dtype(dtype, device_map=device_map)
    if device_map is not None:
        require("accelerate", "accelerate", "loading a model with a device_map")
    if _offloads_to_disk(device_map) and offload_folder is None:
        raise ValueError(
            "the device map puts modules on 'disk': give a folder for their weights "
            "(offload_folder; sea --offload-folder)"
        )
    if revision is not None and kind != "hub":
        raise ValueError(f"revision={revision!r} applies to Hub ids only, not to {name_or_path!r}")

    if kind in ("builtin", "gguf"):
        folder = ensure_converted(gguf_source(value), cache_root(cache_dir))
        model, tokenizer = _from_pretrained(
            str(folder), dtype=torch_dtype, device_map=device_map, revision=None,
            trust_remote_code=False, local_files_only=True, offload_folder=offload_folder,
        )  # fmt: skip
    elif kind == "folder":
        try:
            model, tokenizer = _from_pretrained(
                value, dtype=torch_dtype, device_map=device_map, revision=None,
                trust_remote_code=trust_remote_code, local_files_only=True,
                offload_folder=offload_folder,
            )  # fmt: skip
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"cannot load a model from the folder {value}: {exc}") from exc
    else:
        hub_revision, commit = _hub_revision(value, revision, local_files_only)
        try:
            model, tokenizer = _from_pretrained(
                value, dtype=torch_dtype, device_map=device_map, revision=hub_revision,
                trust_remote_code=trust_remote_code, local_files_only=local_files_only,
                offload_folder=offload_folder,
            )  # fmt: skip
        except Exception as exc:
            clear = _translate_hub_error(value, exc)
            if clear is None:
                raise
            raise clear from exc
        if commit is not None:
            setattr(model.config, REVISION_ATTR, commit)

    model.eval()
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


# --------------------------------------------------------------------------- metadata


def model_name_of(model: PreTrainedModel) -> str:
    """A stable name for metadata: the built-in name or GGUF path a converted model came
    from, else ``config._name_or_path`` (Hub id or absolute folder), else the model type."""
    config = model.config
    for candidate in (getattr(config, NAME_ATTR, None), getattr(config, "_name_or_path", None)):
        if isinstance(candidate, str) and candidate:
            return candidate
    return str(getattr(config, "model_type", None) or type(model).__name__)


def resolve_revision(model: PreTrainedModel) -> str | None:
    """The exact weights' revision when known: the Hub commit hash for Hub loads,
    ``"sha256:<hex>"`` of the GGUF file for converted models, else ``None``."""
    value = getattr(model.config, REVISION_ATTR, None)
    return value if isinstance(value, str) and value else None
