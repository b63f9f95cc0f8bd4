"""Pictures of the boundary blend: the same crops fused with GACN's hard switch and with the blend (the default).

- the demo stack (continuous depth): the truth, the hard switch, the blend, and the two error maps (x4);
- V-4: crops around the pins, the hard switch beside the blend.

    python benchmarks/blend_views.py --out docs/images
    python benchmarks/blend_views.py --v4 blend.png hard.png     # V-4 fused earlier (focusfuse stack, with and
                                                                  # without --no-boundary-blend)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from focusfuse import fuse_stack
from focusfuse.io.images import read_image
from focusfuse.jobs.demo import demo_stack

from halo_views import V4, V4_CROPS, crop, row, save

DEMO_CROPS = {"floor": (0, 150, 370, 250), "front": (120, 60, 300, 200)}  # x0, y0, x1, y1 of the 0.5-scale scene


def error_map(image: np.ndarray, truth: np.ndarray, gain: float = 4.0) -> np.ndarray:
    """|image - truth| per pixel (largest channel), times ``gain``, as 8-bit gray."""
    difference = np.abs(image.astype(np.float32) - truth.astype(np.float32))
    difference = difference.max(axis=2) if difference.ndim == 3 else difference
    return np.clip(difference * gain, 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--weights", default=None)
    parser.add_argument("--v4", type=Path, nargs=2, default=None, metavar=("BLEND", "HARD"),
                        help="V-4 fused with the blend and without it (default: fuse both here, ~4 min on 2 cores)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    stack = demo_stack()
    frames = [np.round(np.clip(f, 0, 1) * 255).astype(np.uint8) for f in stack.frames]
    truth = np.round(np.clip(stack.truth, 0, 1) * 255).astype(np.uint8)
    fused = {blend: fuse_stack(frames, weights=args.weights, align="none", boundary_blend=blend).fused
             for blend in (False, True)}
    for name, box in DEMO_CROPS.items():
        images = [truth, fused[False], fused[True], error_map(fused[False], truth), error_map(fused[True], truth)]
        save(args.out / f"blend-demo-{name}.jpg", row([crop(i, box) for i in images]))

    if args.v4 is not None:
        blended, hard = (read_image(path) for path in args.v4)
    else:
        paths = sorted(V4.glob("V*.jpg"))
        blended, hard = (fuse_stack(paths, weights=args.weights, boundary_blend=blend).fused for blend in (True, False))
    for name, box in V4_CROPS.items():
        save(args.out / f"blend-v4-{name}.jpg", row([crop(hard, box), crop(blended, box)]))


if __name__ == "__main__":
    main()
