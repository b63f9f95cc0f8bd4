"""Pictures of focus boundaries on real images: V-4 crops around the pins, gacn26 pairs with near objects.

Each picture is a row of crops, enlarged 2x (nearest neighbour) so that halos and seams show:
V-4: the fused image and its index map; pairs: frame 1, frame 2, the fused image and the decision map
(with ``--pair-blend``, the pair fused with those blend weights next to GACN's fused image).

    python benchmarks/halo_views.py --out docs/images --prefix halo
    python benchmarks/halo_views.py --prefix pair-refiner --pair-blend focusfuse-blend-pairs --skip-v4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from focusfuse import fuse_pair, fuse_stack
from focusfuse.io.images import read_image
from focusfuse.jobs.depth import colorize_index_map

from shared_data import SHARED  # noqa: E402

V4 = SHARED / "data" / "stacks" / "V-4"
GACN26 = SHARED / "data" / "test" / "gacn26"
V4_CROPS = {"top-pins": (620, 100, 1020, 400), "bottom-pins": (620, 860, 1020, 1160)}  # x0, y0, x1, y1
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--prefix", default="halo")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--skip-v4", action="store_true")
    parser.add_argument("--pair-blend", default=None, help="boundary_blend of a second fusion of each pair")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

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
