"""Pictures of the boundary blend: the same crops fused with GACN's hard switch, the blend with the Laplacian
energy's weights, the learned weights without the refiner, and the learned blend with its refiner (the default).

- the demo stack (continuous depth): the truth and the four fusions, below them their error maps (x4); and the
  floor in the truth and in frames 2, 4 and 6 (``PREFIX-demo-frames.jpg``): what the frames themselves show;
- V-4: crops around the pins, the four fusions side by side (not with ``--skip-v4``).

    python benchmarks/blend_views.py --out docs/images
    python benchmarks/blend_views.py --prefix slab --compositing slab --skip-v4   # the demo as rendered before
    python benchmarks/blend_views.py --v4 learned.png weights-only.png laplacian.png hard.png   # V-4 fused
        # earlier by focusfuse stack with --boundary-blend learned, WEIGHTS-ONLY (see without_refiner), laplacian, off
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from focusfuse import fuse_stack
from focusfuse.evaluation.synthetic import COMPOSITING
from focusfuse.io.images import read_image
from focusfuse.jobs.demo import demo_stack
from focusfuse.methods.gacn.blend_net import BlendNet, load_blend_net, save_blend_weights

from halo_views import V4, V4_CROPS, crop, row, save

DEMO_CROPS = {"floor": (0, 150, 370, 250), "front": (120, 60, 300, 200)}  # x0, y0, x1, y1 of the 0.5-scale scene


def error_map(image: np.ndarray, truth: np.ndarray, gain: float = 4.0) -> np.ndarray:
    """|image - truth| per pixel (largest channel), times ``gain``, as 8-bit gray."""
    difference = np.abs(image.astype(np.float32) - truth.astype(np.float32))
    difference = difference.max(axis=2) if difference.ndim == 3 else difference
    return np.clip(difference * gain, 0, 255).astype(np.uint8)


def without_refiner(weights: str | None, folder: Path) -> str:
    """The learned blend's weights (``weights``, default the shipped ones) without the refiner, saved in ``folder``."""
    net = load_blend_net(weights)
    plain = BlendNet(**{key: value for key, value in net.config.items() if key != "refiner"})
    plain.load_state_dict({key: value for key, value in net.state_dict().items() if not key.startswith("refiner.")})
    return str(save_blend_weights(plain, folder / "weights-only.pt"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--weights", default=None, help="GACN's weights")
    parser.add_argument("--blend", default=None, help="the blend's weights (default: the shipped ones)")
    parser.add_argument("--v4", type=Path, nargs=4, default=None,
                        metavar=("LEARNED", "WEIGHTS_ONLY", "LAPLACIAN", "HARD"),
                        help="V-4 fused with the learned blend, its weights without the refiner, the Laplacian blend "
                             "and without a blend (default: fuse all four here, ~8 min on 2 cores)")
    parser.add_argument("--skip-v4", action="store_true")
    parser.add_argument("--prefix", default="blend", help="of the pictures' names")
    parser.add_argument("--compositing", choices=COMPOSITING, default="extended", help="the demo's layer model")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    stack = demo_stack(compositing=args.compositing)
    frames = [np.round(np.clip(f, 0, 1) * 255).astype(np.uint8) for f in stack.frames]
    truth = np.round(np.clip(stack.truth, 0, 1) * 255).astype(np.uint8)
    folder = Path(tempfile.mkdtemp())
    modes = ("off", "laplacian", without_refiner(args.blend, folder), args.blend or "learned")
    fused = [fuse_stack(frames, weights=args.weights, align="none", boundary_blend=mode).fused for mode in modes]
    for name, box in DEMO_CROPS.items():
        top = row([crop(i, box) for i in (truth, *fused)], scale=1)
        blank = np.full_like(truth, 255)
        bottom = row([crop(i, box) for i in (blank, *(error_map(f, truth) for f in fused))], scale=1)
        save(args.out / f"{args.prefix}-demo-{name}.jpg",
             np.concatenate([top, np.full((6, top.shape[1], 3), 255, np.uint8), bottom]))
    floor = DEMO_CROPS["floor"]
    save(args.out / f"{args.prefix}-demo-frames.jpg", row([crop(i, floor) for i in (truth, *frames[1::2])], scale=1))

    if args.skip_v4:
        return
    if args.v4 is not None:
        fused = [read_image(path) for path in reversed(args.v4)]
    else:
        paths = sorted(V4.glob("V*.jpg"))
        fused = [fuse_stack(paths, weights=args.weights, boundary_blend=mode).fused for mode in modes]
    for name, box in V4_CROPS.items():
        save(args.out / f"{args.prefix}-v4-{name}.jpg", row([crop(image, box) for image in fused]))


if __name__ == "__main__":
    main()
