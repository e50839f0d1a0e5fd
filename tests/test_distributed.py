"""Fitting across processes: two Gloo ranks on the CPU give the one-process editor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from spectral_edit.core.distributed import all_gather_rows, share, world
from spectral_edit.core.statistics import FitError
from spectral_edit.demos.format import Demonstration, write_demos
from spectral_edit.editors.sea import SpectralEditor
from spectral_edit.editors.sea_fit import SpectralFitter, fit_from_arrays

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


SHARDED_LAYERS = 3  # over 2 ranks: blocks (0, 1) and (2,), L not divisible by K
SHARDED_CASES = {
    "dense": {"svd": "dense", "centered": True},
    "thin": {"svd": "thin", "centered": True},
    "auto-elu": {"feature": "elu", "centered": False},  # N > d: auto takes the dense route
    "auto-thin-tanh": {"feature": "tanh", "svd": "auto", "centered": True, "edit_layers": [4]},
}
SHARDED_IDS = (2, 4, 7)  # model layer ids of the three fitted layers


def _sharded_arrays(d: int = D) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    latent = torch.randn(N, SHARDED_LAYERS, 4, generator=g) @ torch.randn(4, d, generator=g)
    h = latent + 0.3 * torch.randn(N, SHARDED_LAYERS, d, generator=g)
    noise = (torch.randn(N, SHARDED_LAYERS, d, generator=g) for _ in range(2))
    return h, h + next(noise), h - next(noise)


def _case_arrays(name: str) -> tuple[torch.Tensor, ...]:
    """The auto-thin case has N < d (wider activations): auto keeps the thin route."""
    return _sharded_arrays(32 if name == "auto-thin-tanh" else D)


def _sharded_worker(rank: int, size: int, folder: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/group", rank=rank, world_size=size
    )
    try:
        held = {}
        for name, options in SHARDED_CASES.items():
            rows = share(N, rank, size)
            h, hp, hn = (x[rows.start : rows.stop] for x in _case_arrays(name))
            editor = fit_from_arrays(
                h, hp, hn, layers=SHARDED_IDS, num_layers=8, distributed=True,
                shard_layers=True, pos_ratio=0.9, neg_ratio=0.9, batch_size=5, **options,
            )  # fmt: skip
            editor.save(Path(folder) / f"{name}.{rank}.safetensors")  # every rank has it all
        # what one rank holds after sharding: its block's sums only
        for route in ("dense", "thin"):
            fitter = SpectralFitter(SHARDED_IDS, D, 8, svd=route, sharded=True)
            fitter.update(*(x[rows.start : rows.stop] for x in _sharded_arrays()))
            block = fitter.shard_layers()
            kept = fitter._samples[0][0].shape if fitter._samples else None  # noqa: SLF001
            cross = tuple(fitter._cross[0].shape) if fitter._cross else None  # noqa: SLF001
            held[route] = {"block": list(block), "layers": list(fitter.layers)}
            held[route].update(cross=cross, kept=None if kept is None else list(kept))
        # one layer over two ranks: rank 1 owns none
        h, hp, hn = (x[rows.start : rows.stop, :1] for x in _sharded_arrays())
        fit_from_arrays(
            h, hp, hn, distributed=True, shard_layers=True, pos_ratio=0.9, neg_ratio=0.9
        ).save(Path(folder) / f"one-layer.{rank}.safetensors")
        # a zero layer in rank 1's block: every rank raises the same error
        h, hp, hn = (x[rows.start : rows.stop].clone() for x in _sharded_arrays())
        h[:, 2] = 0
        try:
            fit_from_arrays(h, hp, hn, layers=SHARDED_IDS, distributed=True, shard_layers=True)
            held["error"] = None
        except FitError as error:
            held["error"] = str(error)
        (Path(folder) / f"held.{rank}.json").write_text(json.dumps(held))
    finally:
        dist.destroy_process_group()


def _assert_same_editor(sharded: SpectralEditor, alone: SpectralEditor, name: str) -> None:
    assert sharded.layers == alone.layers, name
    assert sharded.ranks == alone.ranks, name
    assert sharded.edit_layers == alone.edit_layers, name
    assert sharded.metadata["n_demonstrations"] == N
    assert sharded.metadata["svd"] == alone.metadata["svd"], name
    if alone.feature_scales is None:
        assert sharded.feature_scales is None
    else:
        assert sharded.feature_scales == pytest.approx(alone.feature_scales, rel=1e-12)
    for a, b in zip(_projections(sharded), _projections(alone), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    for a, b in zip(sharded.means or (), alone.means or (), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    stats = sharded.metadata["layer_stats"], alone.metadata["layer_stats"]
    assert [e["layer"] for e in stats[0]] == [e["layer"] for e in stats[1]]
    for mine, theirs in zip(*stats, strict=True):
        assert mine["signature"] == pytest.approx(theirs["signature"], rel=1e-9)
        assert mine["pos_energy_kept"] == pytest.approx(theirs["pos_energy_kept"], rel=1e-9)


def test_sharded_by_layer_over_two_gloo_ranks_fits_the_one_process_editor(tmp_path: Path):
    mp.spawn(_sharded_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    for name, options in SHARDED_CASES.items():
        h, hp, hn = _case_arrays(name)
        alone = fit_from_arrays(
            h, hp, hn, layers=SHARDED_IDS, num_layers=8, pos_ratio=0.9, neg_ratio=0.9, **options
        )
        for rank in range(2):
            sharded = SpectralEditor.load(tmp_path / f"{name}.{rank}.safetensors")
            _assert_same_editor(sharded, alone, f"{name} (rank {rank})")
    assert SpectralEditor.load(tmp_path / "auto-thin-tanh.0.safetensors").metadata["svd"] == "thin"
    h, hp, hn = (x[:, :1] for x in _sharded_arrays())
    alone = fit_from_arrays(h, hp, hn, pos_ratio=0.9, neg_ratio=0.9)
    for rank in range(2):
        sharded = SpectralEditor.load(tmp_path / f"one-layer.{rank}.safetensors")
        _assert_same_editor(sharded, alone, f"one layer (rank {rank})")
    held = [json.loads((tmp_path / f"held.{rank}.json").read_text()) for rank in range(2)]
    # each rank holds its block's d × d sums (dense) or its block's rows of all N (thin)
    assert held[0]["dense"] == {"block": [0, 1], "layers": [2, 4], "cross": [2, D, D], "kept": None}
    assert held[1]["dense"] == {"block": [2], "layers": [7], "cross": [1, D, D], "kept": None}
    assert held[0]["thin"] == {"block": [0, 1], "layers": [2, 4], "cross": None, "kept": [N, 2, D]}
    assert held[1]["thin"] == {"block": [2], "layers": [7], "cross": None, "kept": [N, 1, D]}
    # the zero layer (7, rank 1's) is named on both ranks, in the same words
    assert held[0]["error"] is not None and "layer 7" in held[0]["error"]
    assert held[0]["error"] == held[1]["error"]


def test_sharded_statistics_in_one_process_fit_the_unsharded_editor():
    h, hp, hn = _sharded_arrays()
    for route in ("dense", "thin", "auto"):
        fitter = SpectralFitter(SHARDED_IDS, D, 8, svd=route, centered=True, sharded=True)
        for start in range(0, N, 6):
            fitter.update(h[start : start + 6], hp[start : start + 6], hn[start : start + 6])
        assert fitter.shard_layers() == range(SHARDED_LAYERS)
        assert fitter.shard is not None and fitter.shard.size == 1
        with pytest.raises(FitError, match="take no more demonstrations"):
            fitter.update(h, hp, hn)
        alone = fit_from_arrays(h, hp, hn, layers=SHARDED_IDS, num_layers=8, svd=route,
                                centered=True, pos_ratio=0.9, neg_ratio=0.9)  # fmt: skip
        _assert_same_editor(fitter.fit(pos_ratio=0.9, neg_ratio=0.9), alone, route)
    with pytest.raises(FitError, match="sharded=True"):
        SpectralFitter(SHARDED_IDS, D, 8).shard_layers()


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
    out = ["--out", str(tmp_path / "sharded.safetensors"), "--shard-layers"]
    sharded = subprocess.run(
        [*launcher, "-m", "spectral_edit.cli", *args, *out],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sharded.returncode == 0, sharded.stderr
    assert "over 2 processes, layers sharded" in sharded.stdout
    alone = SpectralEditor.load(tmp_path / "one.safetensors")
    for name in ("two", "sharded"):
        together = SpectralEditor.load(tmp_path / f"{name}.safetensors")
        assert together.metadata["world_size"] == 2 and alone.metadata["world_size"] == 1
        assert together.metadata["n_demonstrations"] == len(DEMOS)
        assert together.ranks == alone.ranks
        for a, b in zip(_projections(together), _projections(alone), strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
