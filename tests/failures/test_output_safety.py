"""Output safety (catalogue item 4, without signals): where outputs may and may not go.

Chosen behaviour, the same for every command (:mod:`spectral_edit.util.atomic`):
missing parent folders are created; an existing ``--out`` file is replaced atomically (no
``--force``); a place that cannot be written (a parent that is a file, a folder where a
file should go, no permission) is refused with exit 2 naming the path, nothing written
and an earlier file kept. New files get ``0o666`` less the umask whatever library wrote
them, and temporaries of dead writers are removed by the next write to the same target.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from spectral_edit.demos.format import Demonstration, write_demos
from spectral_edit.editors.sea import SpectralEditor
from spectral_edit.util.atomic import (
    OutputError,
    atomic_directory,
    atomic_path,
    atomic_write_text,
    check_writable,
    remove_stale_temporaries,
)
from spectral_edit.util.locks import host_tag
from spectral_edit.util.report import write_json
from tests.failures.refusals import (
    assert_nothing_written,
    assert_ok,
    assert_refused,
    run_cli,
    temporaries,
)

DEMOS = [Demonstration(f"Q: item {i}?\nA:", f" yes {i}", f" no {i}") for i in range(6)]


def _fit_args(model_dir: Path, demos: Path, out: Path, *more: str) -> list[str]:
    return [
        "fit",
        "--model",
        str(model_dir),
        "--demos",
        str(demos),
        "--out",
        str(out),
        "--layers",
        "last-1",
        "--neutral",
        "prompt",
        *more,
    ]


@pytest.fixture(scope="module")
def demos_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demos(tmp_path_factory.mktemp("demos") / "demos.jsonl", DEMOS)


@pytest.fixture(scope="module")
def editor(tiny_model_dir: Path, demos_file: Path) -> SpectralEditor:
    """A fitted tiny editor (through the CLI once, then read back)."""
    out = tiny_model_dir.parent / "reference-editor" / "editor.safetensors"
    assert_ok(run_cli(_fit_args(tiny_model_dir, demos_file, out)))
    return SpectralEditor.load(out)


def _dead_pid() -> int:
    """The pid of a process that has already exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ----------------------------------------------------------------------------- modes


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_new_files_get_the_umask_permissions_whoever_writes_them(
    tmp_path: Path, umask: int
) -> None:
    """safetensors creates its files 0600: the atomic writer restores 0666 & ~umask."""
    old = os.umask(umask)
    try:
        with atomic_path(tmp_path / "t.safetensors") as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp))
        atomic_write_text(tmp_path / "t.json", "{}")
    finally:
        os.umask(old)
    for name in ("t.safetensors", "t.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


def test_a_saved_editor_gets_the_umask_permissions(editor: SpectralEditor, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = editor.save(tmp_path / "e.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


# ----------------------------------------------------------------------- temporaries


def test_temporaries_of_dead_writers_are_removed_by_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "editor.safetensors"
    dead = tmp_path / f".editor.safetensors.{host_tag()}-{_dead_pid()}-{'a' * 12}.tmp.safetensors"
    alive = tmp_path / f".editor.safetensors.{host_tag()}-{os.getpid()}-{'b' * 12}.tmp.safetensors"
    elsewhere = tmp_path / f".editor.safetensors.00000000-1-{'c' * 12}.tmp.safetensors"
    other_target = tmp_path / f".report.json.{host_tag()}-{_dead_pid()}-{'d' * 12}.tmp.json"
    for path in (dead, alive, elsewhere, other_target):
        path.write_bytes(b"x" * 1000)
    with atomic_path(target) as tmp:
        save_file({"w": torch.zeros(2)}, str(tmp))
    assert not dead.exists()  # its writer is gone
    assert alive.exists() and elsewhere.exists()  # a live writer's, another machine's
    assert other_target.exists()  # only the target written is swept
    assert remove_stale_temporaries(tmp_path / "report.json") == [other_target]


def test_a_stale_temporary_folder_is_removed_by_the_next_folder_write(tmp_path: Path) -> None:
    stale = tmp_path / f".model.{host_tag()}-{_dead_pid()}-{'e' * 12}.tmp"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "weights.bin").write_bytes(b"w" * 100)
    with atomic_directory(tmp_path / "model") as tmp:
        (tmp / "config.json").write_text("{}")
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# --------------------------------------------------------------- unwritable places


def test_out_under_a_regular_file_is_refused_api(editor: SpectralEditor, tmp_path: Path) -> None:
    """A path under a regular file fails for root too (unlike a chmod)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    for write in (
        lambda: editor.save(blocker / "sub" / "editor.safetensors"),
        lambda: write_json(blocker / "summary.json", {"x": 1}),
        lambda: check_writable(blocker / "editor.safetensors"),
    ):
        with pytest.raises(OutputError, match="is a file, not a folder") as caught:
            write()
        assert str(blocker) in str(caught.value) and "choose another" in str(caught.value).lower()
    assert blocker.read_text() == "keep me"
    assert temporaries(tmp_path) == []


def test_out_under_a_regular_file_is_refused_cli_fit(
    tiny_model_dir: Path, demos_file: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    out = blocker / "editor.safetensors"
    result = run_cli(_fit_args(tiny_model_dir, demos_file, out))
    assert_refused(result, str(blocker), "is a file, not a folder", "choose another")
    assert blocker.read_text() == "keep me"
    assert temporaries(tmp_path) == []


def test_out_under_a_regular_file_is_refused_cli_eval(tiny_model_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    data = Path(__file__).parents[1] / "fixtures" / "data"
    args = ["eval", "truthfulqa", "--model", str(tiny_model_dir), "--mc-file", "mc_task.json"]
    result = run_cli([*args, "--data-dir", str(data), "--limit", "1", "--out", str(blocker)])
    assert_refused(result, str(blocker), "is a file, not a folder")
    assert blocker.read_text() == "keep me"
    assert temporaries(tmp_path) == []


def test_out_that_is_a_folder_is_refused(
    tiny_model_dir: Path, demos_file: Path, editor: SpectralEditor, tmp_path: Path
) -> None:
    folder = tmp_path / "editor.safetensors"
    (folder / "inside").mkdir(parents=True)
    with pytest.raises(OutputError, match="it is a folder; name a file"):
        editor.save(folder)
    result = run_cli(_fit_args(tiny_model_dir, demos_file, folder))
    assert_refused(result, str(folder), "is a folder")
    assert [p.name for p in folder.iterdir()] == ["inside"]
    assert temporaries(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0o500 folder anyway")
def test_read_only_folder_is_refused(editor: SpectralEditor, tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "editor.safetensors").write_bytes(b"earlier")
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="not writable|Permission denied"):
            editor.save(folder / "editor.safetensors")
        with pytest.raises(OutputError, match="not writable"):
            check_writable(folder / "new.safetensors")
    finally:
        folder.chmod(0o700)
    assert_nothing_written(folder / "editor.safetensors", before=b"earlier")


def test_proc_is_refused_even_for_root(editor: SpectralEditor) -> None:
    """A place no one can write, whoever runs the test."""
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc here")
    with pytest.raises(OutputError, match="cannot write /proc/"):
        editor.save("/proc/sea-test-editor.safetensors")


# ---------------------------------------------- missing parents, existing targets


def test_missing_parent_folders_are_created(
    tiny_model_dir: Path, demos_file: Path, editor: SpectralEditor, tmp_path: Path
) -> None:
    api = editor.save(tmp_path / "api" / "deep" / "editor.safetensors")
    assert SpectralEditor.load(api).layers == editor.layers
    out = tmp_path / "cli" / "deeper" / "editor.safetensors"
    assert_ok(run_cli(_fit_args(tiny_model_dir, demos_file, out)))
    assert SpectralEditor.load(out).layers == editor.layers
    assert temporaries(out.parent) == []


def test_existing_out_is_replaced_atomically(
    tiny_model_dir: Path, demos_file: Path, tmp_path: Path
) -> None:
    """No --force: the new editor replaces the old one whole (documented choice)."""
    out = tmp_path / "editor.safetensors"
    out.write_bytes(b"an older file")
    assert_ok(run_cli(_fit_args(tiny_model_dir, demos_file, out, "--pos-ratio", "0.5")))
    first = SpectralEditor.load(out)
    assert_ok(run_cli(_fit_args(tiny_model_dir, demos_file, out, "--pos-ratio", "0.9")))
    second = SpectralEditor.load(out)
    assert first.metadata.get("pos_ratio") != second.metadata.get("pos_ratio")
    assert temporaries(tmp_path) == []


def test_a_failed_write_keeps_the_earlier_file(editor: SpectralEditor, tmp_path: Path) -> None:
    out = tmp_path / "editor.safetensors"
    editor.save(out)
    before = out.read_bytes()
    with pytest.raises(RuntimeError, match="disk gone"), atomic_path(out) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk gone")
    assert_nothing_written(out, before=before)
