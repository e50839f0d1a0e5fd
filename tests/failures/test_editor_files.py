"""Catalogue item 3: bad editor files, and editors for another model.

Every damaged file is refused through the Python API (:class:`EditorFileError` naming the
file and saying what to do) and through ``sea info`` (exit 2, no traceback); loading never
writes anything. An editor for another model's shapes is refused naming both shapes (API,
``sea generate``, ``sea eval truthfulqa``); one of the same shapes fitted on another model
(architecture or weights) is used with an :class:`EditorModelWarning` / ``warning:``.
Chat templates do not exist in this project yet (issue #13), so the "fitted under a chat
template" case has nothing to check.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from spectral_edit import EditorFileError, SpectralEditor, fit_from_arrays, load_editor
from spectral_edit.editors.file_format import (
    METADATA_KEY,
    EditorModelWarning,
    content_hash,
    model_identity,
)
from spectral_edit.hf.models import load_model
from tests.failures.refusals import assert_nothing_written, assert_ok, assert_refused, run_cli
from tests.tiny_models import make_tiny_model, make_tiny_tokenizer

FIXTURES = Path(__file__).parent.parent / "fixtures" / "data"


# ----------------------------------------------------------------------------- helpers
def _editor(hidden: int = 32, num_layers: int = 2, **metadata: Any) -> SpectralEditor:
    """A small SEA editor on random activations (layers 0 and 1)."""
    gen = torch.Generator().manual_seed(0)
    neutral, positive, negative = (torch.randn(12, 2, hidden, generator=gen) for _ in range(3))
    return fit_from_arrays(
        neutral,
        positive,
        negative,
        layers=[0, 1],
        num_layers=num_layers,
        pos_rank=2,
        neg_rank=2,
        metadata=metadata,
    )


def _parts(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """An editor file's JSON header and its tensors, read without any checking."""
    with safe_open(str(path), framework="pt") as handle:
        header = json.loads(handle.metadata()[METADATA_KEY])
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    return header, tensors


def _write(
    path: Path, header: dict[str, Any], tensors: dict[str, torch.Tensor], *, rehash: bool
) -> Path:
    """Write a (crafted) editor file; with ``rehash``, its content hash is made valid."""
    if rehash:
        header = {**header, "content_sha256": content_hash(tensors, header)}
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(header)})
    return path


def _edited_header(change: dict[str, Any], *, rehash: bool) -> Callable[[Path, Path], Path]:
    """A maker of a copy of the valid file with header entries changed."""

    def make(valid: Path, target: Path) -> Path:
        header, tensors = _parts(valid)
        return _write(target, {**header, **change}, tensors, rehash=rehash)

    return make


def _nan_tensor(name: str, value: float) -> Callable[[Path, Path], Path]:
    """A maker of a copy with one entry of tensor ``name`` set to ``value``, hash valid."""

    def make(valid: Path, target: Path) -> Path:
        header, tensors = _parts(valid)
        tensors[name] = tensors[name].clone()
        tensors[name].view(-1)[0] = value
        return _write(target, header, tensors, rehash=True)

    return make


def _bytes(edit: Callable[[bytes], bytes]) -> Callable[[Path, Path], Path]:
    """A maker of a copy whose bytes are ``edit(valid bytes)``."""

    def make(valid: Path, target: Path) -> Path:
        target.write_bytes(edit(valid.read_bytes()))
        return target

    return make


def _flip_last(raw: bytes) -> bytes:
    """Flip one byte inside the tensor data (the file's last bytes)."""
    data = bytearray(raw)
    data[-3] ^= 0x40
    return bytes(data)


def _directory(valid: Path, target: Path) -> Path:
    target.mkdir()
    return target


def _missing(valid: Path, target: Path) -> Path:
    return target


BAD_FILES: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "truncated header": (_bytes(lambda raw: raw[: len(raw) // 4]), "not a readable safetensors"),
    "truncated tensor data": (_bytes(lambda raw: raw[:-10]), "not a readable safetensors"),
    "empty": (_bytes(lambda raw: b""), "not a readable safetensors"),
    "flipped tensor byte": (_bytes(_flip_last), "content hash mismatch"),
    "hidden size edited": (_edited_header({"hidden_size": 16}, rehash=False), "hash mismatch"),
    "layer count edited": (_edited_header({"num_layers": 5}, rehash=False), "hash mismatch"),
    "ranks edited": (_edited_header({"ranks": {"0": [1, 1]}}, rehash=False), "hash mismatch"),
    "format version edited": (
        _edited_header({"format_version": 2}, rehash=False),
        "version 2 is not supported",
    ),
    "kind edited": (_edited_header({"format": "spectral-edit/x"}, rehash=False), "unknown"),
    "hidden size rehashed": (_edited_header({"hidden_size": 16}, rehash=True), "expected (16"),
    "layer count rehashed": (_edited_header({"num_layers": 1}, rehash=True), "out of range"),
    "ranks rehashed": (_edited_header({"ranks": {"0": [1, 1]}}, rehash=True), "'ranks'"),
    "kind rehashed": (
        _edited_header({"format": "spectral-edit/mean-diff"}, rehash=True),
        "do not match",
    ),
    "alpha NaN rehashed": (_edited_header({"alpha": math.nan}, rehash=True), "'alpha'"),
    "NaN factor, valid hash": (_nan_tensor("layer.0.pos", math.nan), "'layer.0.pos'"),
    "Inf mean, valid hash": (_nan_tensor("layer.1.mean", math.inf), "'layer.1.mean'"),
    "a directory": (_directory, "is a directory"),
    "missing": (_missing, "no such editor file"),
}


@pytest.fixture()
def valid(tmp_path: Path) -> Path:
    """A valid editor file in ``tmp_path/good``."""
    (tmp_path / "good").mkdir()
    return _editor().save(tmp_path / "good" / "editor.safetensors")


# ------------------------------------------------------------------- damaged files
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_damaged_editor_file_is_refused_by_the_api(case, valid, tmp_path):
    make, fragment = BAD_FILES[case]
    path = make(valid, tmp_path / "bad.safetensors")
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(EditorFileError) as caught:
        load_editor(path)
    message = str(caught.value)
    assert str(path) in message and fragment in message, message
    with pytest.raises(EditorFileError, match="bad.safetensors"):
        SpectralEditor.load(path)
    if before is not None:  # reading changed nothing, wrote nothing
        assert_nothing_written(path, before)


@pytest.mark.parametrize(
    "case", ["truncated header", "flipped tensor byte", "NaN factor, valid hash", "a directory"]
)
def test_a_damaged_editor_file_is_refused_by_sea_info(case, valid, tmp_path, monkeypatch):
    make, fragment = BAD_FILES[case]
    make(valid, tmp_path / "bad.safetensors")
    monkeypatch.chdir(tmp_path)  # a short relative path: the message holds it unwrapped
    assert_refused(run_cli(["info", "bad.safetensors"]), "bad.safetensors", fragment)
    assert_nothing_written(tmp_path / "new.safetensors")


def test_damage_messages_say_what_to_do(valid, tmp_path):
    for case in ("truncated header", "flipped tensor byte", "NaN factor, valid hash"):
        path = BAD_FILES[case][0](valid, tmp_path / f"{len(case)}.safetensors")
        with pytest.raises(EditorFileError, match="refit"):
            load_editor(path)


def test_an_editor_with_non_finite_values_is_never_written(tmp_path):
    editor = _editor()
    broken = dataclasses.replace(
        editor, neg_factors=(editor.neg_factors[0] * math.inf, editor.neg_factors[1])
    )
    target = tmp_path / "broken.safetensors"
    with pytest.raises(EditorFileError, match="'layer.0.neg'.*non-finite"):
        broken.save(target)
    assert_nothing_written(target)
    earlier = editor.save(target).read_bytes()
    with pytest.raises(EditorFileError):
        broken.save(target)
    assert_nothing_written(target, earlier)  # the earlier editor is kept


class _Trap:
    """Unpickling this creates ``marker``: proof that a file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, (str(self.marker), "w")


def test_a_pickle_renamed_safetensors_is_never_unpickled(tmp_path, monkeypatch):
    marker = tmp_path / "unpickled"
    trap = tmp_path / "editor.safetensors"
    torch.save({"layer.0.pos": torch.zeros(2), "trap": _Trap(marker)}, trap)
    proof = tmp_path / "proof" / "copy.pt"  # the trap works: a real unpickle springs it
    proof.parent.mkdir()
    shutil.copy(trap, proof)
    torch.load(proof, weights_only=False)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(EditorFileError, match="pickle.*never loaded"):
        load_editor(trap)
    with pytest.raises(EditorFileError, match="pickle"):
        SpectralEditor.load(trap, make_tiny_model("llama"))
    monkeypatch.chdir(tmp_path)
    assert_refused(run_cli(["info", "editor.safetensors"]), "editor.safetensors", "pickle")
    assert not marker.exists()


# ------------------------------------------------------------- another model's editor
@pytest.mark.parametrize(("hidden", "layers"), [(16, 2), (32, 3)])
def test_an_editor_of_other_shapes_is_refused_naming_both(hidden, layers, tmp_path):
    path = _editor(hidden, layers).save(tmp_path / "other.safetensors")
    model = make_tiny_model("llama")  # hidden size 32, 2 layers
    with pytest.raises(EditorFileError) as caught:
        load_editor(path, model)
    message = str(caught.value)
    for fragment in (str(path), f"hidden size {hidden} with {layers} layers", "size 32 with 2"):
        assert fragment in message, message
    with pytest.raises(EditorFileError, match=f"hidden size {hidden} with {layers}"):
        _editor(hidden, layers).attach(model)


def test_sea_generate_and_eval_refuse_an_editor_of_other_shapes(
    tiny_model_dir, tmp_path, monkeypatch
):
    _editor(16, 2).save(tmp_path / "narrow.safetensors")
    _editor(32, 2).save(tmp_path / "shallow.safetensors")
    monkeypatch.chdir(tmp_path)
    model = ["--model", str(tiny_model_dir)]  # hidden size 32, 3 layers
    generate = run_cli(["generate", *model, "--editor", "narrow.safetensors", "hi"])
    assert_refused(generate, "narrow.safetensors", "hidden size 16 with 2", "size 32 with 3")
    out = tmp_path / "results"
    evaluation = run_cli(
        ["eval", "truthfulqa", *model, "--editor", "shallow.safetensors"]
        + ["--mc-file", "mc_task.json", "--data-dir", FIXTURES, "--limit", "1", "--out", out]
    )
    assert_refused(evaluation, "shallow.safetensors", "32 with 2 layers", "32 with 3 layers")
    assert not out.exists()


def _identity_warnings(load: Callable[[], object]) -> list[str]:
    """The :class:`EditorModelWarning` messages ``load()`` gives."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load()
    return [str(w.message) for w in caught if issubclass(w.category, EditorModelWarning)]


def test_an_editor_of_the_same_shape_but_another_architecture_warns(tmp_path):
    llama, gpt2 = make_tiny_model("llama"), make_tiny_model("gpt2")  # both 32 wide, 2 layers
    path = _editor(**model_identity(llama)).save(tmp_path / "llama.safetensors")
    assert _identity_warnings(lambda: load_editor(path, llama)) == []
    (message,) = _identity_warnings(lambda: load_editor(path, gpt2))
    assert str(path) in message and "'llama', not 'gpt2'" in message and "refit" in message
    assert _identity_warnings(lambda: load_editor(path)) == []  # no model: nothing to compare
    assert _identity_warnings(lambda: load_editor(_editor().save(tmp_path / "x.st"), gpt2)) == []


@pytest.fixture()
def model_folders(tiny_model_dir, tmp_path) -> tuple[Path, Path, Path]:
    """``(the tiny model folder, a copy of it named differently, the same model with
    other weights)``."""
    copy = tmp_path / "renamed-copy"
    shutil.copytree(tiny_model_dir, copy)
    other = tmp_path / "other-weights"
    make_tiny_model("gemma3", seed=1).save_pretrained(other)
    make_tiny_tokenizer().save_pretrained(other)
    return tiny_model_dir, copy, other


def test_an_editor_of_the_same_shape_but_other_weights_warns(model_folders, tmp_path):
    original, copy, other = model_folders
    fitted_on, _ = load_model(str(original))
    path = _editor(32, 3, **model_identity(fitted_on)).save(tmp_path / "e.safetensors")
    same_weights, _ = load_model(str(copy))
    assert _identity_warnings(lambda: load_editor(path, same_weights)) == []
    other_weights, _ = load_model(str(other))
    (message,) = _identity_warnings(lambda: load_editor(path, other_weights))
    assert "'tiny-gemma3" in message and "'other-weights'" in message, message
    assert "weights fingerprint:" in message and "refit" in message
    assert str(tmp_path) not in message.removeprefix(str(path))  # identities hold no paths


def test_sea_generate_warns_about_an_editor_of_another_model(model_folders, tmp_path, monkeypatch):
    original, _, other = model_folders
    fitted_on, _ = load_model(str(original))
    _editor(32, 3, **model_identity(fitted_on)).save(tmp_path / "e.safetensors")
    monkeypatch.chdir(tmp_path)
    args = ["generate", "--editor", "e.safetensors", "--max-new-tokens", "2", "hi"]
    quiet = assert_ok(run_cli([*args, "--model", original]))
    assert "warning" not in quiet.lower()
    output = assert_ok(run_cli([*args, "--model", other]))
    flat = " ".join(output.split())
    assert "warning:" in output and "e.safetensors: the editor was fitted on 'tiny-gemma3" in flat
    assert "this model is 'other-weights'" in flat
