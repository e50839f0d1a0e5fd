"""The one resumable store of the long jobs (``sea demo``, ``sea compare``, the benchmark
grids): results kept in a folder, each under the key of the options that produced it, so
that a rerun with the same options reuses them and a changed option recomputes.

Kinds of entries, all in ``folder``:

- records: ``<name>.json`` = ``{"key": options_key(options), "options": ..., "result": ...}``
  (JSON-able results: stage summaries, scored units);
- tensors: ``<name>.safetensors`` whose metadata holds ``"key"`` (and string extras);
- artifacts: a file another writer saves itself (an editor's ``save(path)``), with a
  record ``<name>.json`` written after it, whose key says what the file was made with;
- rows: ``<name>.jsonl``, JSON objects appended under the file lock ``<name>.lock`` by
  any number of processes (the benchmark grids' shards), each row identified by its own
  fields rather than a key.

Every file is written atomically (:mod:`spectral_edit.util.atomic`): a reader sees the old
file or the new one, never half of one; a record whose JSON does not parse or whose key
differs counts as missing. Tensors computed with ``shared=True`` are computed under a file
lock, so that of several processes one computes and the others wait and load. A job that
owns the whole folder holds :meth:`Store.exclusive` (:func:`~spectral_edit.util.locks.folder_lock`)
for its run: a second run into the same folder is refused, naming the holder's pid.

Keys are by content, not by name or place: a stage's options hold :func:`model_key` (the
model's shareable name, a fingerprint of its weights and the library version) and
:func:`content_key` of the data it read (demonstrations, questions, texts), never a local
path, so that replacing a model folder's weights or pointing at another data folder
recomputes, and a record can be shared without revealing where anything lay.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import torch
from filelock import FileLock
from safetensors import safe_open
from safetensors.torch import save_file

from ..util.atomic import atomic_path, atomic_write_text, ensure_folder
from ..util.identity import shareable_name
from ..util.locks import folder_lock

T = TypeVar("T")
Tensors = dict[str, torch.Tensor]
Echo = Callable[[str], None]


def options_key(options: Mapping[str, Any]) -> str:
    """A stable hash of JSON-able options (key order does not matter)."""
    text = json.dumps(options, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _library_version() -> str:
    try:
        return metadata.version("spectral-edit")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a bare checkout
        return "unknown"


LIBRARY_VERSION = _library_version()
"""Part of every :func:`model_key`: results of another version of the library recompute."""

_SAMPLE = 4096


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A hex sha256 of a model's weights, cheap at any size: every state-dict entry's
    name, shape and dtype, and up to 4096 evenly spaced elements of each (all of a small
    tensor). Another checkpoint, a fine-tune or a re-initialisation moves every sampled
    element, so it changes the fingerprint; where the weights live (a folder, the Hub
    cache, a GGUF) does not. Costs a few milliseconds per hundred tensors."""
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}\n".encode())
            if tensor.device.type == "meta" or tensor.numel() == 0:
                continue  # offloaded: its shape is all there is to see
            flat = tensor.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // _SAMPLE)][:_SAMPLE]
            digest.update(sample.to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_key(model: torch.nn.Module, name: str) -> dict[str, str]:
    """What every stage computed with ``model`` depends on: its shareable name
    (:func:`~spectral_edit.util.identity.shareable_name`: a local folder by its final
    name only), :func:`weights_fingerprint` and :data:`LIBRARY_VERSION`. JSON-ready."""
    return {
        "name": shareable_name(name) if name else "",
        "weights": weights_fingerprint(model),
        "library": LIBRARY_VERSION,
    }


def content_key(items: Iterable[Any]) -> str:
    """:func:`options_key` of the data a stage read (dataclasses by their fields): the
    same items in the same order give the same key, whichever file they came from."""
    return options_key({"items": [_plain(x) for x in items]})


def _plain(item: Any) -> Any:
    """A dataclass instance as its fields, anything else as it is."""
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return dataclasses.asdict(item)
    return item


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


@dataclass(frozen=True)
class Store:
    """Entries under ``folder`` (created on the first write). ``echo`` is told when a
    record is reused (``"· <name>: done earlier, reusing <path>"``)."""

    folder: Path
    echo: Echo | None = None

    def path(self, filename: str) -> Path:
        """Where an entry's file lies (``filename`` with its suffix)."""
        return Path(self.folder) / filename

    # ------------------------------------------------------------------ records

    def get(self, name: str, options: Mapping[str, Any]) -> tuple[bool, Any]:
        """``(True, result)`` where a record of ``name`` exists for these options, else
        ``(False, None)`` (also for a record that does not parse)."""
        path = self.path(f"{name}.json")
        if not path.is_file():
            return False, None
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return False, None
        if (
            isinstance(stored, dict)
            and stored.get("key") == options_key(options)
            and "result" in stored
        ):
            return True, stored["result"]
        return False, None

    def put(self, name: str, options: Mapping[str, Any], result: Any) -> None:
        """Store ``result`` (JSON-able) as the record of ``name`` for these options."""
        record = {"key": options_key(options), "options": dict(options), "result": result}
        _write_json(self.path(f"{name}.json"), record)

    def run(self, name: str, options: Mapping[str, Any], compute: Callable[[], T]) -> T:
        """The stored result of ``name`` for these options, or ``compute()`` stored."""
        found, result = self.get(name, options)
        if found:
            self._reused(name)
            return result  # the JSON of a T stored earlier
        result = compute()
        self.put(name, options, result)
        return result

    def _reused(self, name: str) -> None:
        if self.echo is not None:
            self.echo(f"· {name}: done earlier, reusing {self.path(f'{name}.json')}")

    def forget(self, name: str) -> None:
        """Remove the record of ``name`` (if any)."""
        self.path(f"{name}.json").unlink(missing_ok=True)

    # ------------------------------------------------------------------ tensors

    def get_tensors(
        self, name: str, options: Mapping[str, Any]
    ) -> tuple[Tensors, dict[str, str]] | None:
        """The tensors of ``name`` and their metadata (without the key), or ``None``
        where there is no such file or it was made with other options."""
        path = self.path(f"{name}.safetensors")
        if not path.is_file():
            return None
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            if metadata.pop("key", None) != options_key(options):
                return None
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
        return tensors, metadata

    def put_tensors(
        self,
        name: str,
        options: Mapping[str, Any],
        tensors: Mapping[str, torch.Tensor],
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Store ``tensors`` (made contiguous) with the options' key and ``metadata``."""
        path = self.path(f"{name}.safetensors")
        header = {**dict(metadata or {}), "key": options_key(options)}
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), header)

    def tensors(
        self,
        name: str,
        options: Mapping[str, Any],
        compute: Callable[[], Mapping[str, torch.Tensor]],
        *,
        shared: bool = False,
    ) -> Tensors:
        """The stored tensors of ``name`` for these options, or ``compute()`` stored.
        ``shared``: under the lock ``<name>.lock`` (processes sharing the folder)."""
        with self.lock(name) if shared else contextlib.nullcontext():
            found = self.get_tensors(name, options)
            if found is not None:
                return found[0]
            tensors = dict(compute())
            self.put_tensors(name, options, tensors)
            return tensors

    # ------------------------------------------------------------------ artifacts

    def get_artifact(
        self, name: str, options: Mapping[str, Any], filename: str, load: Callable[[Path], T]
    ) -> tuple[T, Any] | None:
        """``(load(path), record result)`` of the file ``filename`` where the record
        ``name`` was written for these options and the file exists, else ``None``."""
        path = self.path(filename)
        found, result = self.get(name, options)
        if not (found and path.is_file()):
            return None
        return load(path), result

    def put_artifact(
        self,
        name: str,
        options: Mapping[str, Any],
        filename: str,
        save: Callable[[Path], object],
        result: Any = None,
    ) -> None:
        """``save(path)`` the file ``filename`` (the writer should be atomic), then the
        record ``name`` with ``result``: a record always describes a complete file."""
        path = self.path(filename)
        ensure_folder(path.parent)
        save(path)
        self.put(name, options, result)

    def artifact(
        self,
        name: str,
        options: Mapping[str, Any],
        filename: str,
        load: Callable[[Path], T],
        make: Callable[[], tuple[Callable[[Path], object], Any]],
    ) -> tuple[T, Any]:
        """``(load(path), result)`` of the stored artifact, or of a new one: ``make()``
        returns ``(save, result)``, and the artifact is saved, then loaded back (so a
        fresh run and a resumed one go on with the same object)."""
        found = self.get_artifact(name, options, filename, load)
        if found is not None:
            self._reused(name)
            return found
        save, result = make()
        self.put_artifact(name, options, filename, save, result)
        return load(self.path(filename)), result

    # ------------------------------------------------------------------ rows

    def lock(self, name: str) -> FileLock:
        """The file lock ``<name>.lock`` (the folder is created)."""
        ensure_folder(self.folder)
        return FileLock(str(self.path(f"{name}.lock")))

    @contextlib.contextmanager
    def exclusive(self, command: str) -> Iterator[Store]:
        """Hold the folder for one run of ``command`` (the folder is created): a second
        run meanwhile gets :class:`~spectral_edit.util.locks.FolderInUse` naming this
        process; a run killed while holding it leaves no lock behind. Yields the store."""
        with folder_lock(ensure_folder(self.folder), command):
            yield self

    def append(self, name: str, row: Mapping[str, Any]) -> None:
        """Append ``row`` as one JSON line to ``<name>.jsonl``, under the lock."""
        with self.lock(name), self.path(f"{name}.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(dict(row)) + "\n")

    def rows(self, name: str, *, locked: bool = False) -> list[dict[str, Any]]:
        """Every row of ``<name>.jsonl`` in file order (none where there is no file).
        ``locked``: read under the lock, while other processes may be appending (a
        read-only reader, e.g. of committed results, leaves it off: no lock file)."""
        path = self.path(f"{name}.jsonl")
        with self.lock(name) if locked else contextlib.nullcontext():
            if not path.exists():
                return []
            text = path.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]
