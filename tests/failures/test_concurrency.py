"""Concurrency (catalogue item 6): two writers of one output, two converters of one GGUF,
two jobs in one folder, and a stale lock left by a killed process.

Chosen behaviour: an output file written by two ``sea fit`` at once ends as one complete
editor (the last committed), never a mix; ``sea demo`` / ``sea compare`` / ``sea tune``
hold their output folder (:func:`~spectral_edit.util.locks.folder_lock`) and a second run
into it is refused at once, exit 2, naming the folder and the holder's pid; a holder
that dies releases the lock with its process, so the next run just proceeds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from spectral_edit.core.options import SeaOptions
from spectral_edit.demos.format import Demonstration, write_demos
from spectral_edit.editors.sea import SpectralEditor
from spectral_edit.experiments.compare import run_compare
from spectral_edit.experiments.compare_results import CompareOptions
from spectral_edit.experiments.demo_job import truthfulness_demo
from spectral_edit.hf import gguf_cache
from spectral_edit.util import locks
from spectral_edit.util.locks import LOCK_FILE, FolderInUse, folder_lock
from tests.failures import sea_process
from tests.failures.refusals import assert_ok, assert_refused, run_cli, temporaries
from tests.tiny_models import make_tiny_model, make_tiny_tokenizer

ROOT = Path(__file__).parents[2]
DEMOS = [Demonstration(f"Q: item {i}?\nA:", f" yes {i}", f" no {i}") for i in range(6)]

_HOLDER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("locks", {path!r})
locks = sys.modules["locks"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(locks)
with locks.folder_lock({folder!r}, "sea demo"):
    print("locked", flush=True)
    time.sleep(120)
"""


def _hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding ``folder``'s lock (the real module, loaded alone so that
    the process starts in a fraction of a second)."""
    code = _HOLDER.format(path=str(Path(locks.__file__)), folder=str(folder))
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "locked"
    return process


def test_a_second_holder_in_the_same_process_is_refused(tmp_path: Path) -> None:
    with folder_lock(tmp_path, "sea compare"):
        with pytest.raises(FolderInUse) as caught, folder_lock(tmp_path, "sea compare"):
            pass
        message = str(caught.value)
        assert str(tmp_path) in message and f"pid {os.getpid()}" in message
        assert "sea compare" in message and "choose another output folder" in message
    with folder_lock(tmp_path, "sea demo"):  # released: free again
        pass
    assert (tmp_path / LOCK_FILE).read_text() == ""  # left empty, not deleted


def test_sea_demo_into_a_held_folder_is_refused_then_a_stale_lock_is_recovered(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEA_OFFLINE", "1")
    out = tmp_path / "demo"
    out.mkdir()
    holder = _hold_lock(out)
    try:
        with pytest.raises(FolderInUse, match=f"pid {holder.pid}"):
            truthfulness_demo(str(tiny_model_dir), out_dir=out, data_dir=tmp_path, n_demos=2)
        result = run_cli(["demo", "--model", tiny_model_dir, "--n-demos", "2", "--out", out])
        assert_refused(result, str(out), f"pid {holder.pid}", "sea demo", "another output folder")
        assert [p.name for p in out.iterdir()] == [LOCK_FILE]  # nothing else written
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    recorded = json.loads((out / LOCK_FILE).read_text())
    assert recorded["pid"] == holder.pid and not locks.process_alive(holder.pid)  # stale
    with folder_lock(out, "sea demo"):  # recovered: the dead holder's lock is free
        assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_sea_compare_into_a_held_folder_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    out.mkdir()
    holder = _hold_lock(out)
    try:
        model, tokenizer = make_tiny_model("gemma3"), make_tiny_tokenizer()
        with pytest.raises(FolderInUse, match=f"pid {holder.pid}"):
            run_compare(
                model,
                tokenizer,
                DEMOS,
                {1: ["q1"], 2: ["q2"]},  # type: ignore[dict-item]  # never read: refused first
                CompareOptions(methods=("none",)),
                out,
                echo=lambda _: None,
            )
        assert [p.name for p in out.iterdir()] == [LOCK_FILE]
    finally:
        holder.kill()
        holder.wait()


def test_two_sea_fit_into_one_out_give_one_complete_editor(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Process A stops just before committing its editor; B writes the same file meanwhile;
    then A commits. At every moment the file is one whole editor (B's, then A's)."""
    demos = write_demos(tmp_path / "demos.jsonl", DEMOS)
    out = tmp_path / "editor.safetensors"
    base = ["fit", "--model", tiny_model_dir, "--demos", demos, "--out", out, "--neutral", "prompt"]
    process = sea_process.start(
        [*base, "--layers", "last-1"], hold="editor.safetensors", hold_seconds=4
    )
    sea_process.wait_for(process)  # A holds its complete temporary, uncommitted
    assert_ok(run_cli([*base, "--layers", "last-2"]))  # B, meanwhile
    assert SpectralEditor.load(out).layers == (1, 2)  # B's, whole
    output, _ = process.communicate(timeout=120)  # A wakes and commits
    assert process.returncode == 0, output
    assert SpectralEditor.load(out).layers == (2,)  # A's, whole
    assert temporaries(tmp_path) == []


def test_two_processes_converting_one_gguf_convert_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child process converts (slowly, with a stub GGUF reader) under the real file
    lock; this process asks for the same model meanwhile, waits, and reads the result."""
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("the gguf extra is not installed")
    gguf = tmp_path / "toy.gguf"
    gguf.write_bytes(b"GGUF stand-in")
    cache = tmp_path / "cache"
    child = subprocess.Popen(
        [sys.executable, "-c", _CONVERTER.format(root=str(ROOT), gguf=str(gguf))],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, gguf_cache.CACHE_ENV_VAR: str(cache), "OMP_NUM_THREADS": "1"},
    )
    assert child.stdout is not None
    for line in child.stdout:  # until the child holds the lock and is converting
        if line.startswith("converting"):
            break
    else:
        raise AssertionError(f"the child never converted: {child.wait()}")
    calls: list[str] = []
    monkeypatch.setattr(gguf_cache, "load_gguf_uncached", lambda *a, **k: calls.append("x"))
    source = gguf_cache.gguf_source(str(gguf))
    folder = gguf_cache.ensure_converted(source, cache)  # waits for the child's lock
    assert child.wait(timeout=120) == 0, child.stdout.read()
    assert calls == []  # converted once, by the child
    marker = json.loads((folder / gguf_cache.MARKER_FILE).read_text())
    assert marker["fingerprint"] == source.fingerprint
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name, f"{folder.name}.lock"]


_CONVERTER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    from spectral_edit.hf import gguf_cache
    from tests.tiny_models import make_tiny_model, make_tiny_tokenizer

    def slow_reader(path, **_):
        print("converting", flush=True)
        time.sleep(2)
        model = make_tiny_model("gemma3")
        model.config.quantization_config = {{"quant_method": "gguf"}}
        return model, make_tiny_tokenizer()

    gguf_cache.load_gguf_uncached = slow_reader
    source = gguf_cache.gguf_source({gguf!r})
    gguf_cache.ensure_converted(source, gguf_cache.cache_root())
    """
)


def test_demo_api_run_holds_its_folder_for_the_run(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a demo runs, its folder is held: a second run started from inside the first
    (the echo callback runs mid-job) is refused; the first completes."""
    monkeypatch.setenv("SEA_OFFLINE", "1")
    out = tmp_path / "demo"
    refusals: list[str] = []

    def echo(message: str) -> None:
        if message.startswith("demonstrations:") and not refusals:
            try:
                truthfulness_demo(str(tiny_model_dir), out_dir=out, data_dir=tmp_path)
            except FolderInUse as error:
                refusals.append(str(error))

    truthfulness_demo(
        str(tiny_model_dir),
        SeaOptions(layers="last-1", neutral="prompt", pos_ratio=0.8, neg_ratio=0.8),
        out_dir=out,
        data_dir=tmp_path,
        n_demos=12,
        echo=echo,
    )
    assert len(refusals) == 1 and f"pid {os.getpid()}" in refusals[0]
    assert (out / "editor.safetensors").is_file()
