"""Convert a GGUF (built-in or a ``.gguf`` file) once into a cached Hugging Face folder.

Loading a GGUF with transformers dequantises every tensor and takes tens of seconds, so a
GGUF is converted **once** into an ordinary Hugging Face folder (float32 safetensors +
``config.json`` + tokenizer files) under the cache root (:func:`cache_root`:
``$SEA_CACHE_DIR``, else the user cache dir of ``spectral-edit``), in
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

A conversion needs the ``gguf`` extra; reading a complete folder does not (but naming the
built-in model always imports its package, for the pinned sha256).

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
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ..util.atomic import atomic_directory, atomic_write_text, sha256_file
from .model_names import (
    BUILTIN_MODELS,
    NAME_ATTR,
    REVISION_ATTR,
    TRANSFORMERS_LOCK,
    ModelLoadError,
    ModelNotFoundError,
    classify,
    require_gguf_extra,
)

__all__ = [
    "CACHE_ENV_VAR",
    "CONVERSION_FORMAT",
    "MARKER_FILE",
    "GgufSource",
    "cache_root",
    "converted_model_dir",
    "ensure_converted",
    "gguf_source",
    "load_gguf_uncached",
]

logger = logging.getLogger(__name__)

CACHE_ENV_VAR = "SEA_CACHE_DIR"
"""Environment variable that overrides :func:`cache_root`."""

MARKER_FILE = "complete.json"
"""Written last into a converted folder; a folder without it is incomplete."""

CONVERSION_FORMAT = 1
"""Bumped when the converted-folder layout changes; older folders are then rebuilt."""


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


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class GgufSource:
    """What a conversion needs to know about a GGUF, before reading it."""

    name: str  # reported by model_name_of: built-in name or absolute .gguf path
    slug: str  # cache folder stem
    fingerprint: str  # hex digest identifying the source
    locate: Callable[[], Path]  # returns the .gguf path (may assemble it)
    expected_sha256: str | None = None  # pinned digest of the file's bytes, if known

    def folder(self, root: Path) -> Path:
        """The converted folder under the cache ``root`` (complete or not)."""
        return root / "models" / f"{self.slug}-{self.fingerprint[:16]}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "model"


def gguf_source(name_or_path: str) -> GgufSource:
    """The source of a built-in name or ``.gguf`` path (see
    :func:`~spectral_edit.hf.model_names.classify`).

    Raises:
        ValueError: ``name_or_path`` names a folder or a Hub id.
        ModelNotFoundError: a missing path; MissingGgufExtraError: a built-in name
            without its package.
    """
    kind, value = classify(name_or_path)
    if kind == "builtin":
        builtin = BUILTIN_MODELS[value]
        pinned = builtin.source_sha256()
        return GgufSource(
            name=builtin.name,
            slug=_slug(builtin.name),
            fingerprint=pinned,
            locate=builtin.gguf_path,
            expected_sha256=pinned,
        )
    if kind != "gguf":
        raise ValueError(f"{name_or_path!r} is not a built-in name or a .gguf file")
    path = Path(value)
    stat = path.stat()
    key = f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()
    return GgufSource(
        name=str(path),
        slug=_slug(path.stem),
        fingerprint=hashlib.sha256(key).hexdigest(),
        locate=lambda: path,
    )


def converted_model_dir(
    name_or_path: str, *, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Where the converted copy of a built-in name or ``.gguf`` path lives (or would live).

    The folder is usable only if it contains ``complete.json``.
    """
    return gguf_source(name_or_path).folder(cache_root(cache_dir))


# --------------------------------------------------------------------------- markers


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_complete(folder: Path, source: GgufSource) -> bool:
    """A folder counts only with a readable marker for this exact source and format."""
    marker = _read_marker(folder)
    return (
        marker is not None
        and marker.get("format") == CONVERSION_FORMAT
        and marker.get("fingerprint") == source.fingerprint
    )


def _remove_leftovers(target: Path) -> None:
    """Delete an incomplete ``target`` and temporaries from interrupted conversions.

    Only called while holding the target's lock, so nobody is writing them.
    """
    if target.exists():
        logger.warning("removing incomplete converted model at %s", target)
        shutil.rmtree(target)
    for leftover in target.parent.glob(f".{target.name}.*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)


# --------------------------------------------------------------------------- conversion


def ensure_converted(source: GgufSource, root: Path) -> Path:
    """Return the complete converted folder of ``source`` under the cache ``root``,
    converting it first (under the folder's file lock) when it is absent or incomplete.

    Raises:
        MissingGgufExtraError: a conversion is needed and ``gguf`` is not installed.
    """
    target = source.folder(root)
    if _is_complete(target, source):
        return target
    _require_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target.parent / f"{target.name}.lock"))
    logger.debug("waiting for the conversion lock %s", lock.lock_file)
    with lock:
        if _is_complete(target, source):  # another process finished it while we waited
            return target
        _remove_leftovers(target)
        _convert(source, target)
    return target


def _require_gguf() -> None:
    require_gguf_extra("gguf", "reading a GGUF model")


def load_gguf_uncached(
    gguf_path: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a ``.gguf`` file directly with transformers (slow: dequantises every tensor).

    The returned model carries a GGUF quantizer and cannot be ``save_pretrained``; it is
    what a conversion starts from, and the reference the conversion is checked against.
    Needs the ``gguf`` extra.
    """
    _require_gguf()
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


def _convert(source: GgufSource, target: Path) -> None:
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
    with TRANSFORMERS_LOCK:
        gguf_model, tokenizer = load_gguf_uncached(gguf_path)
    timings["gguf_load"] = time.perf_counter() - start

    start = time.perf_counter()
    with TRANSFORMERS_LOCK:
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
