"""Tests for spectral_edit.hf.gguf_cache: a GGUF is converted once, under a lock, into a
complete cached folder; and the ``gguf`` extra is needed only where a GGUF is read.

A fake "GGUF loader" returns a tiny model (marked as quantized, refusing save_pretrained
like a real GGUF model), so nothing here reads a real GGUF.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from spectral_edit.hf import gguf_cache
from spectral_edit.hf.gguf_cache import cache_root, converted_model_dir
from spectral_edit.hf.model_names import (
    BUILTIN_MODELS,
    DEFAULT_MODEL,
    BuiltinModel,
    MissingGgufExtraError,
    ModelLoadError,
)
from spectral_edit.hf.models import load_model, model_name_of, resolve_revision
from spectral_edit.util.atomic import sha256_file
from spectral_edit.util.extras import MissingExtraError
from tests.tiny_models import make_tiny_model, make_tiny_tokenizer

TEXT = "Q: Is the sky green?\nA: no, it is blue on a clear day"
INSTALL_HINT = "pip install 'spectral-edit[gguf]'"


def _state_equal(a: PreTrainedModel, b: PreTrainedModel) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class FakeGguf:
    """Stands in for the slow GGUF loader: counts calls, can sleep or fail."""

    def __init__(self, arch: str = "gemma3", seed: int = 7) -> None:
        self.reference = make_tiny_model(arch, seed=seed)
        self.arch, self.seed = arch, seed
        self.calls = 0
        self.delay_s = 0.0
        self.fail = False
        self._lock = threading.Lock()

    def __call__(
        self, path: object, **_: object
    ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        with self._lock:
            self.calls += 1
        time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("simulated crash while reading the GGUF")
        model = make_tiny_model(self.arch, seed=self.seed)
        model.config.quantization_config = {"quant_method": "gguf", "gguf_file": str(path)}

        def refuse(*args: object, **kwargs: object) -> None:
            raise RuntimeError("a GGUF-loaded model cannot be saved")

        model.save_pretrained = refuse  # type: ignore[method-assign]
        return model, make_tiny_tokenizer()


@pytest.fixture
def fake_gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, FakeGguf]:
    """A dummy .gguf file and the patched loader; the cache root is a temp dir."""
    path = tmp_path / "weights" / "toy-model.Q4.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF not really a model")
    loader = FakeGguf()
    monkeypatch.setattr(gguf_cache, "load_gguf_uncached", loader)
    monkeypatch.setenv(gguf_cache.CACHE_ENV_VAR, str(tmp_path / "cache"))
    return path, loader


def test_gguf_converted_once_then_read_from_cache(fake_gguf: tuple[Path, FakeGguf]) -> None:
    path, loader = fake_gguf
    model, tok = load_model(str(path))
    assert loader.calls == 1
    folder = converted_model_dir(str(path))
    assert folder.parent.parent == cache_root()
    assert folder.name.startswith("toy-model.Q4-")
    marker = json.loads((folder / gguf_cache.MARKER_FILE).read_text(encoding="utf-8"))
    assert marker["source_sha256"] == sha256_file(path)
    assert marker["format"] == gguf_cache.CONVERSION_FORMAT
    assert _state_equal(model, loader.reference)
    assert not hasattr(model.config, "quantization_config")
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert model_name_of(model) == str(path.resolve())
    assert resolve_revision(model) == f"sha256:{sha256_file(path)}"
    assert tok(TEXT)["input_ids"] == make_tiny_tokenizer()(TEXT)["input_ids"]

    again, _ = load_model(str(path), dtype="bf16")
    assert loader.calls == 1  # cache hit
    assert again.dtype == torch.bfloat16
    # only the finished folder and its lock file are in the cache: no temporaries
    assert {p.name for p in folder.parent.iterdir()} == {folder.name, f"{folder.name}.lock"}


def test_concurrent_loads_convert_once(fake_gguf: tuple[Path, FakeGguf]) -> None:
    path, loader = fake_gguf
    loader.delay_s = 0.5
    barrier = threading.Barrier(3)
    results: list[PreTrainedModel] = []
    errors: list[BaseException] = []

    def worker() -> None:
        barrier.wait()
        try:
            results.append(load_model(str(path))[0])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert loader.calls == 1
    assert len(results) == 3
    assert all(_state_equal(m, loader.reference) for m in results)


def test_half_written_folder_is_ignored_and_redone(fake_gguf: tuple[Path, FakeGguf]) -> None:
    path, loader = fake_gguf
    folder = converted_model_dir(str(path))
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{truncated", encoding="utf-8")
    stale_tmp = folder.parent / f".{folder.name}.deadbeef.tmp"
    stale_tmp.mkdir()
    (stale_tmp / "model.safetensors").write_bytes(b"partial")

    model, _ = load_model(str(path))
    assert loader.calls == 1
    assert (folder / gguf_cache.MARKER_FILE).is_file()
    assert json.loads((folder / "config.json").read_text(encoding="utf-8"))["model_type"]
    assert not stale_tmp.exists()
    assert _state_equal(model, loader.reference)


def test_marker_for_another_source_is_not_trusted(fake_gguf: tuple[Path, FakeGguf]) -> None:
    path, loader = fake_gguf
    load_model(str(path))
    folder = converted_model_dir(str(path))
    marker_path = folder / gguf_cache.MARKER_FILE
    marker = json.loads(marker_path.read_text(encoding="utf-8"))
    marker_path.write_text(json.dumps({**marker, "fingerprint": "0" * 64}), encoding="utf-8")
    load_model(str(path))
    assert loader.calls == 2
    assert json.loads(marker_path.read_text(encoding="utf-8"))["fingerprint"] != "0" * 64


def test_failed_conversion_leaves_nothing_behind(fake_gguf: tuple[Path, FakeGguf]) -> None:
    path, loader = fake_gguf
    loader.fail = True
    with pytest.raises(RuntimeError, match="simulated crash"):
        load_model(str(path))
    folder = converted_model_dir(str(path))
    assert not folder.exists()
    assert not list(folder.parent.glob(f".{folder.name}*"))
    loader.fail = False
    model, _ = load_model(str(path))  # the lock was released
    assert loader.calls == 2
    assert _state_equal(model, loader.reference)


def test_changed_gguf_file_is_converted_again(fake_gguf: tuple[Path, FakeGguf]) -> None:
    path, loader = fake_gguf
    load_model(str(path))
    first = converted_model_dir(str(path))
    path.write_bytes(b"GGUF a different, longer body")
    second = converted_model_dir(str(path))
    assert second != first
    load_model(str(path))
    assert loader.calls == 2
    assert first.is_dir() and second.is_dir()


def test_conversion_rejects_weights_that_do_not_fit(
    fake_gguf: tuple[Path, FakeGguf], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, loader = fake_gguf
    real_call = loader.__call__

    def quantized_looking(p: object, **kw: object) -> tuple[PreTrainedModel, object]:
        model, tok = real_call(p)
        packed = model.state_dict()
        packed["model.layers.0.mlp.up_proj.weight"] = torch.zeros(7, dtype=torch.uint8)
        model.state_dict = lambda: packed  # type: ignore[method-assign]
        return model, tok

    monkeypatch.setattr(gguf_cache, "load_gguf_uncached", quantized_looking)
    with pytest.raises(ModelLoadError, match="still quantized"):
        load_model(str(path))
    assert not converted_model_dir(str(path)).exists()


class _FakeBuiltin(BuiltinModel):
    """A built-in entry whose 'package' is the dummy GGUF file."""

    def __init__(self, path: Path) -> None:
        super().__init__(name=DEFAULT_MODEL, package="unused", description="fake")
        object.__setattr__(self, "_path", path)

    def source_sha256(self) -> str:
        return sha256_file(self._path)  # type: ignore[attr-defined]

    def gguf_path(self) -> Path:
        return self._path  # type: ignore[attr-defined]


def test_builtin_name_round_trips_through_cache(
    fake_gguf: tuple[Path, FakeGguf], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, loader = fake_gguf
    monkeypatch.setitem(BUILTIN_MODELS, DEFAULT_MODEL, _FakeBuiltin(path))
    model, _ = load_model(DEFAULT_MODEL)
    again, _ = load_model(DEFAULT_MODEL)
    assert loader.calls == 1
    assert model_name_of(model) == model_name_of(again) == DEFAULT_MODEL
    assert resolve_revision(again) == f"sha256:{sha256_file(path)}"
    folder = converted_model_dir(DEFAULT_MODEL)
    assert folder.name == f"{DEFAULT_MODEL}-{sha256_file(path)[:16]}"


def test_cache_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(gguf_cache.CACHE_ENV_VAR, str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv(gguf_cache.CACHE_ENV_VAR)
    assert cache_root().name.lower().startswith("spectral-edit")


# --------------------------------------------------------------------------- gguf extra


def _assert_names_the_extra(error: BaseException) -> None:
    assert isinstance(error, ModelLoadError) and isinstance(error, MissingExtraError)
    assert INSTALL_HINT in str(error)


def test_missing_gguf_package_is_reported_before_any_conversion(
    fake_gguf: tuple[Path, FakeGguf], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, loader = fake_gguf
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(MissingGgufExtraError) as info:
        load_model(str(path))
    _assert_names_the_extra(info.value)
    assert "GGUF" in str(info.value)
    assert loader.calls == 0
    assert not converted_model_dir(str(path)).exists()


def test_load_gguf_uncached_needs_the_gguf_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(MissingGgufExtraError) as info:
        gguf_cache.load_gguf_uncached(tmp_path / "weights.gguf")
    _assert_names_the_extra(info.value)


def test_converted_gguf_loads_without_the_gguf_package(
    fake_gguf: tuple[Path, FakeGguf], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, loader = fake_gguf
    load_model(str(path))
    monkeypatch.setitem(sys.modules, "gguf", None)
    model, _ = load_model(str(path))  # a complete folder is a plain HF folder
    assert loader.calls == 1
    assert _state_equal(model, loader.reference)


def test_missing_builtin_package_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(gguf_cache.CACHE_ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.setitem(sys.modules, BUILTIN_MODELS[DEFAULT_MODEL].package, None)
    with pytest.raises(MissingGgufExtraError) as info:
        load_model(DEFAULT_MODEL)
    _assert_names_the_extra(info.value)
    assert DEFAULT_MODEL in str(info.value)
    with pytest.raises(MissingGgufExtraError):
        converted_model_dir(DEFAULT_MODEL)
    assert not (tmp_path / "cache").exists()
