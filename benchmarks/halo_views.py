"""Pictures of focus boundaries on real images: V-4 crops around the pins, gacn26 pairs with near objects.

Each picture is a row of crops, enlarged 2x (nearest neighbour) so that halos and seams show:
V-4: the fused image and its index map; pairs: frame 1, frame 2, the fused image and the decision map
(with ``--pair-blend``, the pair fused with those blend weights next to GACN's fused image).
With ``--v4-lines``, only the thin bright lines beside V-4's pins: the fused image next to single frames
warped onto it, enlarged 4x, to show whether a line is in the frames or made by the fusion.

    python benchmarks/halo_views.py --out docs/images --prefix halo
    python benchmarks/halo_views.py --prefix pair-refiner --pair-blend focusfuse-blend-pairs --skip-v4
    python benchmarks/halo_views.py --v4-lines
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from focusfuse import fuse_pair, fuse_stack
from focusfuse.align.warp import warp_frame
from focusfuse.io.images import read_image
from focusfuse.jobs.depth import colorize_index_map

from shared_data import SHARED  # noqa: E402

V4 = SHARED / "data" / "stacks" / "V-4"
GACN26 = SHARED / "data" / "test" / "gacn26"
V4_CROPS = {"top-pins": (620, 100, 1020, 400), "bottom-pins": (620, 860, 1020, 1160)}  # x0, y0, x1, y1
# crops across one line each, with the frames (1-based) where the line or the pin's top is sharp
V4_LINES = {"lines-bottom": ((700, 960, 780, 1020), (4, 8, 12, 20)),
            "lines-top": ((780, 220, 850, 280), (4, 8, 12, 20))}
PAIR_CROPS = {"color_lytro_05": (0, 0, 260, 200), "color_lytro_01": (200, 120, 460, 320),
              "color_lytro_10": (250, 150, 510, 350), "gray_mwg_clock": (40, 40, 300, 240)}


def as_rgb(image: np.ndarray) -> np.ndarray:
    image = image if image.dtype == np.uint8 else np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image[:, :, :3]


def crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1]


def row(images: list[np.ndarray], scale: int = 2, gap: int = 6) -> np.ndarray:
    """Crops side by side, enlarged ``scale`` times, with white gaps."""
    tiles = [cv2.resize(as_rgb(i), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) for i in images]
    height = max(t.shape[0] for t in tiles)
    parts = []
    for t in tiles:
        parts += [np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0)), constant_values=255),
                  np.full((height, gap, 3), 255, np.uint8)]
    return np.concatenate(parts[:-1], axis=1)


def save(path: Path, picture: np.ndarray) -> None:
    """JPEG (quality 92): the pictures are for the docs, where PNGs of this size would weigh megabytes."""
    if not cv2.imwrite(str(path), picture[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92]):
        raise SystemExit(f"{path}: could not write")
    print(f"wrote {path}")


def v4_lines(out: Path, prefix: str, weights: str | None) -> None:
    """The fused V-4 beside single frames warped onto it, across the thin lines beside the pins."""
    paths = sorted(V4.glob("V*.jpg"))
    result = fuse_stack(paths, weights=weights)
    alignment = result.alignment
    for name, (box, numbers) in V4_LINES.items():
        frames = [warp_frame(read_image(paths[n - 1]), alignment.frames[n - 1], alignment.shape) for n in numbers]
        if result.box is not None:  # the fused image is cropped to this window of the reference frame
            frames = [crop(frame, result.box) for frame in frames]
        tiles = [crop(result.fused, box)] + [crop(frame, box) for frame in frames]
        picture = row(tiles, scale=4)
        step = (box[2] - box[0]) * 4 + 6
        for i, n in enumerate(numbers, start=1):
            cv2.putText(picture, f"V{n:03d}", (i * step + 4, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 0, 0), 2)
        save(out / f"{prefix}-v4-{name}.jpg", picture)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--prefix", default="halo")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--skip-v4", action="store_true")
    parser.add_argument("--pair-blend", default=None, help="boundary_blend of a second fusion of each pair")
    parser.add_argument("--v4-lines", action="store_true", help="only the V-4 lines beside the pins, with frames")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.v4_lines:
        v4_lines(args.out, args.prefix, args.weights)
        return

    for name, box in PAIR_CROPS.items():
        a, b = GACN26 / f"{name}_1.png", GACN26 / f"{name}_2.png"
        if not a.exists():
            raise SystemExit(f"needs the gacn26 pairs in {GACN26} (set FOCUSFUSE_SHARED)")
        result = fuse_pair(a, b, weights=args.weights, align="none")
        images = [read_image(a), read_image(b), result.fused, result.decision_map]
        if args.pair_blend:
            images.insert(3, fuse_pair(a, b, weights=args.weights, align="none", boundary_blend=args.pair_blend).fused)
        save(args.out / f"{args.prefix}-{name}.jpg", row([crop(i, box) for i in images]))

    if not args.skip_v4:
        frames = sorted(V4.glob("V*.jpg"))
        result = fuse_stack(frames, weights=args.weights)
        index = colorize_index_map(result.index_map, len(frames))
        for name, box in V4_CROPS.items():
            save(args.out / f"{args.prefix}-v4-{name}.jpg", row([crop(result.fused, box), crop(index, box)]))


if __name__ == "__main__":
    main()
