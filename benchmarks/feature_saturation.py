#!/usr/bin/env python
"""Where Φ-SEA's feature maps saturate: per layer, the fit-time RMS scale s, the share of
coordinates with |h / s| > 2 (tanh above 0.96 there) and the share of the squared norm
that those coordinates carry, from a saved activation file (``neutral``: ``(N, L, d)``,
as written by ``bias_grid.py`` or ``truthfulness_grid.py``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors.torch import load_file

from spectral_edit.editors.sea_fit import default_feature_scales


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("activations", type=Path)
    parser.add_argument("--n", type=int, default=None, help="first N demonstrations")
    parser.add_argument("--threshold", type=float, default=2.0)
    args = parser.parse_args()
    neutral = load_file(str(args.activations))["neutral"][: args.n].double()
    for layer, scale in enumerate(default_feature_scales(neutral)):
        h = neutral[:, layer]
        large = (h / scale).abs() > args.threshold
        energy = h.square()
        row = {
            "layer_position": layer,
            "rms_scale": round(scale, 2),
            "share_large": large.double().mean().item(),
            "energy_share_large": (energy * large).sum().item() / energy.sum().item(),
            "max_abs_over_scale": (h / scale).abs().max().item(),
        }
        print(json.dumps(row))


if __name__ == "__main__":
    main()
