"""Fitting across processes: two Gloo ranks on the CPU give the one-process editor."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from spectral_edit.core.distributed import all_gather_rows, share, world
from spectral_edit.demos.format import Demonstration, write_demos
from spectral_edit.editors.sea import SpectralEditor
from spectral_edit.editors.sea_fit import fit_from_arrays

N, LAYERS, D = 23, 2, 16
CASES = {
    "dense": {"svd": "dense", "centered": True},
    "thin": {"svd": "thin", "centered": True},
    "auto-elu": {"feature": "elu", "centered": False},  # scales from every rank's rows
}


def _arrays() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    latent = torch.randn(N, LAYERS, 4, generator=g) @ torch.randn(4, D, generator=g)
    h = latent + 0.3 * torch.randn(N, LAYERS, D, generator=g)
    return h, h + torch.randn(N, LAYERS, D, generator=g), h - torch.randn(N, LAYERS, D, generator=g)


def _projections(editor: SpectralEditor) -> list[torch.Tensor]:
    return [u @ u.T for u in (*editor.pos_factors, *editor.neg_factors)]


def _worker(rank: int, size: int, folder: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/group", rank=rank, world_size=size
    )
    try:
        assert world() == (rank, size)
        rows = share(N, rank, size)
        gathered = all_gather_rows(torch.arange(N)[rows.start : rows.stop])
        assert gathered.tolist() == list(range(N))  # rank order restores the file's order
        h, hp, hn = (x[rows.start : rows.stop] for x in _arrays())
        for name, options in CASES.items():
            editor = fit_from_arrays(
                h, hp, hn, distributed=True, pos_ratio=0.9, neg_ratio=0.9, **options
            )
            if rank == 0:
                editor.save(Path(folder) / f"{name}.safetensors")
    finally:
        dist.destroy_process_group()


def test_share_splits_in_order_and_refuses_too_few():
    parts = [share(10, r, 3) for r in range(3)]
    assert [list(p) for p in parts] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    with pytest.raises(ValueError, match="2 demonstrations cannot be split over 3"):
        share(2, 0, 3)
    assert world() == (0, 1)


def test_two_gloo_ranks_fit_the_one_process_editor(tmp_path: Path):
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    h, hp, hn = _arrays()
    for name, options in CASES.items():
        alone = fit_from_arrays(h, hp, hn, pos_ratio=0.9, neg_ratio=0.9, **options)
        together = SpectralEditor.load(tmp_path / f"{name}.safetensors")
        assert together.ranks == alone.ranks, name
        assert together.metadata["n_demonstrations"] == N
        if alone.feature_scales is not None:
            assert together.feature_scales == pytest.approx(alone.feature_scales, rel=1e-12)
        else:
            assert together.feature_scales is None
        for a, b in zip(_projections(together), _projections(alone), strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


WORDS = ["apple", "river", "stone", "cloud", "lamp", "green", "north", "seven", "paper", "glass"]
DEMOS = [
    Demonstration(f"Q: question number {i} about {w}?\nA:", f"yes {w}", f"no {i}")
    for i, w in enumerate(WORDS)
]


def test_torchrun_sea_fit_over_two_processes_equals_one(tiny_model_dir: Path, tmp_path: Path):
    demos = write_demos(tmp_path / "demos.jsonl", DEMOS)
    args = ["fit", "--model", str(tiny_model_dir), "--demos", str(demos), "--neutral", "prompt"]
    args += ["--layers", "all", "--centered", "--pos-ratio", "0.9", "--neg-ratio", "0.9"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sea = [sys.executable, "-m", "spectral_edit.cli"]
    one = subprocess.run(
        [*sea, *args, "--out", str(tmp_path / "one.safetensors")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
    ]
    two = subprocess.run(
        [*launcher, "-m", "spectral_edit.cli", *args, "--out", str(tmp_path / "two.safetensors")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr
    assert "over 2 processes" in two.stdout
    alone = SpectralEditor.load(tmp_path / "one.safetensors")
    together = SpectralEditor.load(tmp_path / "two.safetensors")
    assert together.metadata["world_size"] == 2 and alone.metadata["world_size"] == 1
    assert together.metadata["n_demonstrations"] == len(DEMOS)
    assert together.ranks == alone.ranks
    for a, b in zip(_projections(together), _projections(alone), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
