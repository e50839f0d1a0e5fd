"""Catalogue item 7, editor side: an editor records no local path.

A fit from files under the test's temporary folder (a model folder and a demonstrations
file) records the model as its folder name plus a fingerprint of its files, and the
demonstrations file as its name plus sha256; no string of the file holds an absolute path.
``sea info`` shows these identities.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spectral_edit import Demonstration, SeaOptions, load_editor, write_demos
from spectral_edit.experiments.pipeline import demos_file_metadata, fit_editor
from spectral_edit.hf.models import load_model
from spectral_edit.util.atomic import sha256_file
from spectral_edit.util.identity import (
    folder_fingerprint,
    is_local_path,
    path_identity,
    shareable_name,
)
from tests.failures.refusals import assert_ok, run_cli

DEMOS = [
    Demonstration(f"Question {i}: is the sky {c}?", f"yes {i}", f"no, it is {c}")
    for i, c in enumerate(["blue", "green", "red", "grey", "black", "white"])
]


@pytest.fixture()
def demos_file(tmp_path: Path) -> Path:
    return write_demos(tmp_path / "inputs" / "my demos.jsonl", DEMOS)


def _strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value (keys included)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _whole_header(path: Path) -> dict[str, Any]:
    """The safetensors header of ``path`` with the editor's JSON metadata parsed."""
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    header["__metadata__"] = {k: json.loads(v) for k, v in header["__metadata__"].items()}
    return header


def _assert_no_local_path(path: Path, *roots: Path) -> None:
    """No string of the editor file's header is a local path or holds one of ``roots``."""
    raw = path.read_bytes()
    for root in roots:
        assert str(root).encode() not in raw, f"{root} recorded in {path}"
    leaks = [s for s in _strings(_whole_header(path)) if is_local_path(s) or s.startswith("/")]
    assert leaks == [], leaks


def test_sea_fit_records_names_and_hashes_not_paths(
    tiny_model_dir, demos_file, tmp_path, tmp_path_factory
):
    out = tmp_path / "out" / "editor.safetensors"
    args = ["fit", "--demos", demos_file, "--out", out, "--model", tiny_model_dir]
    assert_ok(run_cli([*args, "--layers", "all", "--neutral", "prompt", "--pos-rank", "2"]))
    _assert_no_local_path(out, tmp_path, tmp_path_factory.getbasetemp(), Path.home())
    meta = load_editor(out).metadata
    assert meta["model"] == tiny_model_dir.name
    assert meta["model_revision"] == f"fingerprint:{folder_fingerprint(tiny_model_dir)}"
    assert meta["model_type"] == "gemma3_text"
    assert meta["demonstrations_file"] == "my demos.jsonl"
    assert meta["demonstrations_sha256"] == sha256_file(demos_file)

    shown = " ".join(assert_ok(run_cli(["info", out])).split())
    assert tiny_model_dir.name in shown and "gemma3_text" in shown
    assert f"my demos.jsonl (sha256 {meta['demonstrations_sha256'][:12]})" in shown


def test_the_api_fit_records_no_local_path(tiny_model_dir, demos_file, tmp_path):
    model, tokenizer = load_model(str(tiny_model_dir))
    options = SeaOptions(layers="all", neutral="prompt", pos_rank=2, neg_rank=2)
    editor = fit_editor(model, tokenizer, DEMOS, options, metadata=demos_file_metadata(demos_file))
    path = editor.save(tmp_path / "api.safetensors")
    _assert_no_local_path(path, tmp_path, tiny_model_dir)
    assert editor.metadata["model"] == tiny_model_dir.name


@pytest.mark.parametrize(
    ("given", "recorded"),
    [
        ("/home/alice/models/tiny", "tiny"),
        ("/home/alice/models/tiny/", "tiny"),
        ("~/models/tiny", "tiny"),
        ("../up/demos.jsonl", "demos.jsonl"),
        ("C:\\Users\\alice\\demos.jsonl", "demos.jsonl"),
        ("Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-0.5B"),
        ("gemma-3-270m", "gemma-3-270m"),
        ("data/demos.jsonl", "data/demos.jsonl"),
    ],
)
def test_shareable_name_keeps_names_and_drops_local_paths(given, recorded):
    assert shareable_name(given) == recorded
    assert not is_local_path(shareable_name(given))


def test_path_identity_is_the_content_not_the_place(tmp_path, demos_file):
    copy = tmp_path / "elsewhere" / demos_file.name
    copy.parent.mkdir()
    copy.write_bytes(demos_file.read_bytes())
    assert path_identity(copy) == path_identity(demos_file)
    assert path_identity(demos_file) == {"name": "my demos.jsonl", "sha256": sha256_file(copy)}
    copy.write_bytes(demos_file.read_bytes() + b"\n")
    assert path_identity(copy)["sha256"] != path_identity(demos_file)["sha256"]
    one, two = tmp_path / "one", tmp_path / "two"
    for folder in (one, two):
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "w.bin").write_bytes(b"weights")
        (folder / ".cache").write_bytes(folder.name.encode())  # hidden: not content
    assert path_identity(one)["sha256"] == path_identity(two)["sha256"]
    (two / "sub" / "w.bin").write_bytes(b"weightz")
    assert path_identity(one)["sha256"] != path_identity(two)["sha256"]
    with pytest.raises(FileNotFoundError):
        path_identity(tmp_path / "missing")


def test_a_large_file_is_fingerprinted_by_sampled_blocks(tmp_path, monkeypatch):
    from spectral_edit.util import identity

    monkeypatch.setattr(identity, "WHOLE_FILE_LIMIT", 0)
    monkeypatch.setattr(identity, "SAMPLED_BLOCKS", 3)
    monkeypatch.setattr(identity, "_BLOCK", 4)
    folder = tmp_path / "model"
    folder.mkdir()
    weights = folder / "w.bin"
    weights.write_bytes(bytes(range(40)))
    before = folder_fingerprint(folder)
    assert folder_fingerprint(folder) == before
    weights.write_bytes(bytes([255]) + bytes(range(1, 40)))  # a sampled block changes
    assert folder_fingerprint(folder) != before
    weights.write_bytes(bytes(range(40)) + b"x")  # the size changes
    assert folder_fingerprint(folder) != before
