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
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import torch

from spectral_edit.editors.sea_fit import SpectralFitter


def statistics_bytes(route: str, n: int, layers: int, d: int) -> int:
    """What the fitter holds (docs/scaling.md): float64 sums ``3 L d + 3 L`` always; the
    dense route ``2 L d²`` float64; the thin route the activations ``3 N L d`` float32."""
    small = 8 * (3 * layers * d + 3 * layers) + 8 * layers
    if route == "dense":
        return small + 8 * 2 * layers * d * d
    return small + 4 * 3 * n * layers * d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--route", choices=["thin", "dense"], default="thin")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
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
