#!/usr/bin/env python
"""Peak memory and time of a SEA fit at large-model shapes, on synthetic activations.

Streams ``--n`` demonstrations of ``--layers`` × ``--d`` activations (low-rank signal plus
noise, float32, generated batch by batch so that the generator holds no copy) into a
:class:`~spectral_edit.editors.sea_fit.SpectralFitter` on ``--route`` and fits it;
prints one JSON line: seconds of the updates and of the fit, the peak resident memory of
this process (``ru_maxrss``) and the memory the statistics hold by the formula of
``docs/scaling.md``. Run each route in its own process (the peak is per process)::

    python benchmarks/fit_memory.py --d 4096 --layers 32 --n 2000 --route thin
    python benchmarks/fit_memory.py --d 4096 --layers 2 --n 2000 --route dense

``--ranks K`` runs K Gloo processes on this machine (one torch thread each), each
streaming its contiguous share of the same batches, reducing (all-reduce, or with
``--shard-layers`` one layer's sums at a time to its owner) and fitting; one JSON line per
rank, with its peak (``ru_maxrss``), its peak above the memory it had before the stream
(``peak_above_start_gib``: the statistics and their transients) and the bytes of the
fitter's tensors after the reduction::

    python benchmarks/fit_memory.py --d 2048 --layers 8 --n 1000 --route dense --ranks 2
    python benchmarks/fit_memory.py --d 2048 --layers 8 --n 1000 --route dense --ranks 2 \
        --shard-layers
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from spectral_edit.core.distributed import layer_block, share
from spectral_edit.editors.sea_fit import SpectralFitter


def statistics_bytes(route: str, n: int, layers: int, d: int) -> int:
    """What the fitter holds (docs/scaling.md): float64 sums ``3 L d + 3 L`` always; the
    dense route ``2 L d²`` float64; the thin route the activations ``3 N L d`` float32."""
    small = 8 * (3 * layers * d + 3 * layers) + 8 * layers
    if route == "dense":
        return small + 8 * 2 * layers * d * d
    return small + 4 * 3 * n * layers * d


def sharded_bytes(route: str, n: int, layers: int, d: int, ranks: int) -> int:
    """What one rank holds at the peak of a layer-sharded fit (docs/scaling.md): its own
    rows ``3 (N/K) L d`` float32 until the reduction, then its block of ``⌈L/K⌉``
    layers' sums ``2 d²`` float64 each and one layer's partial sums being reduced
    (dense), or its block's rows of all ``N`` demonstrations (thin)."""
    small = 8 * (3 * layers * d + 3 * layers) + 8 * layers
    own_rows = 4 * 3 * -(-n // ranks) * layers * d
    block = -(-layers // ranks)
    if route == "dense":
        return small + own_rows + 8 * 2 * (block + 1) * d * d
    return small + own_rows + 4 * 3 * n * block * d


def rss_bytes() -> int:
    """The resident memory of this process now (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def held_bytes(fitter: SpectralFitter) -> int:
    """The bytes of the tensors the fitter holds (sums, cross sums, kept activations)."""
    tensors = [fitter.sum_neutral, fitter.sum_pos, fitter.sum_neg, fitter.sum_sq]
    tensors += list(fitter._cross or ())  # noqa: SLF001 - a benchmark reads the internals
    tensors += [x for batch in fitter._samples or () for x in batch]  # noqa: SLF001
    return sum(t.numel() * t.element_size() for t in tensors)


def _batch(args: argparse.Namespace, basis: torch.Tensor, index: int) -> tuple[torch.Tensor, ...]:
    """Batch ``index`` of the stream: the same whichever rank generates it."""
    gen = torch.Generator().manual_seed(args.seed * 1_000_003 + index + 1)
    rows = min(args.batch, args.n - index * args.batch)
    latent = torch.einsum("nlk,lkd->nld", torch.randn(rows, args.layers, 32, generator=gen), basis)
    h = latent + 0.5 * torch.randn(rows, args.layers, args.d, generator=gen)
    return h, h + torch.randn(h.shape, generator=gen), h - torch.randn(h.shape, generator=gen)


def _rank(rank: int, args: argparse.Namespace, folder: str) -> None:
    """One Gloo rank of ``--ranks``: its share of the batches, the reduction, the fit."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/group", rank=rank, world_size=args.ranks
    )
    try:
        basis = torch.randn(args.layers, 32, args.d, generator=torch.Generator().manual_seed(0))
        start_rss = rss_bytes()
        fitter = SpectralFitter(
            range(args.layers), args.d, args.layers, centered=True, svd=args.route,
            sharded=args.shard_layers,
        )  # fmt: skip
        started = time.perf_counter()
        batches = -(-args.n // args.batch)
        for index in share(batches, rank, args.ranks):
            fitter.update(*_batch(args, basis, index))
        updated = time.perf_counter()
        if args.shard_layers:
            fitter.shard_layers()
        else:
            fitter.all_reduce()
        reduced = time.perf_counter()
        held = held_bytes(fitter)
        editor = fitter.fit(pos_ratio=0.99, neg_ratio=0.99)
        fitted = time.perf_counter()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        formula = (
            sharded_bytes(args.route, args.n, args.layers, args.d, args.ranks)
            if args.shard_layers
            else statistics_bytes(args.route, args.n, args.layers, args.d)
        )
        record = {
            "rank": rank,
            "ranks": args.ranks,
            "shard_layers": args.shard_layers,
            "route": args.route,
            "n": args.n,
            "layers": args.layers,
            "d": args.d,
            "layers_fitted_here": len(layer_block(args.layers, rank, args.ranks))
            if args.shard_layers
            else args.layers,
            "update_seconds": round(updated - started, 1),
            "reduce_seconds": round(reduced - updated, 1),
            "fit_seconds": round(fitted - reduced, 1),
            "peak_rss_gib": round(peak / 2**30, 3),
            "peak_above_start_gib": round((peak - start_rss) / 2**30, 3),
            "held_after_reduction_gib": round(held / 2**30, 3),
            "peak_statistics_gib_by_formula": round(formula / 2**30, 3),
            "ranks_first_layer": list(editor.ranks[editor.layers[0]]),
            "machine": platform.platform(),
        }
        print(json.dumps(record), flush=True)
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--route", choices=["thin", "dense"], default="thin")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ranks", type=int, default=1, help="Gloo processes (default 1)")
    parser.add_argument(
        "--shard-layers", action="store_true", help="with --ranks: shard the sums by layer"
    )
    args = parser.parse_args()
    if args.ranks > 1:
        with tempfile.TemporaryDirectory() as folder:
            mp.spawn(_rank, args=(args, folder), nprocs=args.ranks, join=True)
        return
    gen = torch.Generator().manual_seed(args.seed)
    basis = torch.randn(args.layers, 32, args.d, generator=gen)
    fitter = SpectralFitter(range(args.layers), args.d, args.layers, centered=True, svd=args.route)
    started = time.perf_counter()
    for start in range(0, args.n, args.batch):
        rows = min(args.batch, args.n - start)
        latent = torch.einsum(
            "nlk,lkd->nld", torch.randn(rows, args.layers, 32, generator=gen), basis
        )
        h = latent + 0.5 * torch.randn(rows, args.layers, args.d, generator=gen)
        fitter.update(
            h, h + torch.randn(h.shape, generator=gen), h - torch.randn(h.shape, generator=gen)
        )
    updated = time.perf_counter()
    editor = fitter.fit(pos_ratio=0.99, neg_ratio=0.99)
    fitted = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "route": args.route,
                "n": args.n,
                "layers": args.layers,
                "d": args.d,
                "update_seconds": round(updated - started, 1),
                "fit_seconds": round(fitted - updated, 1),
                "peak_rss_gib": round(peak / 2**30, 2),
                "statistics_gib_by_formula": round(
                    statistics_bytes(args.route, args.n, args.layers, args.d) / 2**30, 2
                ),
                "ranks_first_layer": list(editor.ranks[editor.layers[0]]),
                "torch_threads": torch.get_num_threads(),
                "machine": platform.platform(),
            }
        )
    )


if __name__ == "__main__":
    main()
