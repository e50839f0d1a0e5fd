#!/usr/bin/env python
"""Time the fitter's two SVD routes (dense d × d vs thin N-dimensional factors) on random
activations of a given size and check that they give the same editor.

    python benchmarks/fit_svd_routes.py --d 4096 --n 1000 --layers 2

Prints one JSON line per route: seconds for ``fit`` (the SVDs dominate), the ranks, and
the largest difference between the two routes' projections.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from spectral_edit.editors.sea_fit import SpectralFitter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=4096)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--ratio", type=float, default=0.99)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(args.seed)
    shape = (args.n, args.layers, args.d)
    latent = torch.einsum(
        "nlk,lkd->nld",
        torch.randn(args.n, args.layers, 64, generator=gen),
        torch.randn(args.layers, 64, args.d, generator=gen),
    )
    h, hp, hn = (latent + 0.5 * torch.randn(shape, generator=gen) + 2.0 for _ in range(3))
    editors = {}
    for route in ("thin", "dense"):
        fitter = SpectralFitter(range(args.layers), args.d, args.layers, centered=True, svd=route)
        fitter.update(h, hp, hn)
        t0 = time.perf_counter()
        editors[route] = fitter.fit(pos_ratio=args.ratio, neg_ratio=args.ratio)
        seconds = time.perf_counter() - t0
        print(
            json.dumps(
                {
                    "route": route,
                    "d": args.d,
                    "n": args.n,
                    "layers": args.layers,
                    "fit_seconds": round(seconds, 3),
                    "ranks": {str(k): v for k, v in editors[route].ranks.items()},
                }
            ),
            flush=True,
        )
    diff = max(
        float((a - b).abs().max())
        for layer in range(args.layers)
        for a, b in zip(
            editors["thin"].projections(layer), editors["dense"].projections(layer), strict=True
        )
    )
    print(json.dumps({"max_projection_difference": diff}))


if __name__ == "__main__":
    main()
