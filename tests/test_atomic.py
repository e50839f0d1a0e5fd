"""Tests for spectral_edit.util.atomic: all-or-nothing writes and hashing."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from spectral_edit.util.atomic import (
    atomic_directory,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    sha256_file,
)


def _entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_write_text_and_bytes_replace_content_and_leave_no_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    atomic_write_text(target, "first\n")
    atomic_write_text(target, "second — ünïcode\n")
    assert target.read_text(encoding="utf-8") == "second — ünïcode\n"
    atomic_write_bytes(tmp_path / "raw.bin", b"\x00\x01\xff")
    assert (tmp_path / "raw.bin").read_bytes() == b"\x00\x01\xff"
    assert _entries(tmp_path) == {"out.json", "raw.bin"}


def test_atomic_path_keeps_suffix_and_directory(tmp_path: Path) -> None:
    target = tmp_path / "editor.safetensors"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.suffix == ".safetensors"
        assert tmp != target
        assert not target.exists()
        save_file({"w": torch.arange(6.0).reshape(2, 3)}, str(tmp))
    assert torch.equal(load_file(str(target))["w"], torch.arange(6.0).reshape(2, 3))
    assert _entries(tmp_path) == {"editor.safetensors"}


def test_atomic_path_on_error_keeps_old_file_and_removes_temporary(tmp_path: Path) -> None:
    target = tmp_path / "report.md"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("half-written", encoding="utf-8")
        raise RuntimeError("boom")
    assert target.read_text(encoding="utf-8") == "old"
    assert _entries(tmp_path) == {"report.md"}


def test_atomic_path_gives_normal_permissions(tmp_path: Path) -> None:
    reference = tmp_path / "plain.txt"
    reference.write_text("x", encoding="utf-8")  # created with 0o666 & ~umask
    atomic_write_text(tmp_path / "atomic.txt", "x")
    mode = stat.S_IMODE(os.stat(tmp_path / "atomic.txt").st_mode)
    assert mode == stat.S_IMODE(os.stat(reference).st_mode)


def test_atomic_path_creates_missing_parent_folders(tmp_path: Path) -> None:
    target = tmp_path / "nope" / "deeper" / "f.txt"
    atomic_write_text(target, "x")
    assert target.read_text(encoding="utf-8") == "x"
    assert _entries(target.parent) == {"f.txt"}


def test_atomic_directory_success_failure_and_existing_target(tmp_path: Path) -> None:
    target = tmp_path / "folder"
    with atomic_directory(target) as tmp:
        assert not target.exists()
        (tmp / "a.txt").write_text("a", encoding="utf-8")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("b", encoding="utf-8")
    assert (target / "sub" / "b.txt").read_text(encoding="utf-8") == "b"
    assert _entries(tmp_path) == {"folder"}

    other = tmp_path / "other"
    with pytest.raises(ValueError), atomic_directory(other) as tmp:
        (tmp / "a.txt").write_text("a", encoding="utf-8")
        raise ValueError("fail")
    assert _entries(tmp_path) == {"folder"}

    with pytest.raises(FileExistsError, match="already exists"), atomic_directory(target) as tmp:
        (tmp / "new.txt").write_text("n", encoding="utf-8")
    assert _entries(tmp_path) == {"folder"}
    assert not (target / "new.txt").exists()


def test_sha256_file_matches_hashlib_across_chunks(tmp_path: Path) -> None:
    data = os.urandom((1 << 20) * 2 + 12345)  # spans several 1 MiB chunks
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    path.write_bytes(b"")
    assert sha256_file(path) == hashlib.sha256(b"").hexdigest()
