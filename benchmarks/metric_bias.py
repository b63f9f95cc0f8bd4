"""Metric bias: do the six no-reference fusion metrics rank the true decision map first?

On held-out synthetic pairs with a known focus mask (the scenes of ``near_dilation.py``: a near object
and the far rest, Gaussian or layered defocus), each fused image ``F = p*A + (1-p)*B`` is scored with
the six metrics of ``focusfuse evaluate`` and, against the sharp image, PSNR. The maps ``p``:

- ``truth``: the mask itself;
- ``near eroded K`` / ``near dilated K``: the near object shrunk / grown by K px (a square K-px step);
- one map per ``--weights`` (the pipeline's final map, near frame given first and then second).

Each row gives the means and, per metric, in how many scenes the map scores above ``truth``. A metric that
ranks a wrong map above the truth in most scenes rewards that error, whatever the weights.

    python benchmarks/metric_bias.py --weights weights/focusfuse-gacn.pt \
        --weights ../shared/reference/gacn_official/GACN.pkl
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from focusfuse.jobs.demo import to_uint8
from focusfuse.evaluation.metrics import METRIC_NAMES, compute_all
from focusfuse.methods.gacn.weights import load_model
from near_dilation import BSDS, DEFAULT_BLUR, held_out_scenes, maps_both_orders, near_far_pair

COLUMNS = (*METRIC_NAMES, "PSNR")


def shifted_masks(near: np.ndarray, px: int) -> dict[str, np.ndarray]:
    """The true near mask, and the same eroded and dilated by ``px``."""
    mask = (near > 0.5).astype(np.uint8)
    kernel = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    return {"truth": mask, f"near eroded {px}": cv2.erode(mask, kernel), f"near dilated {px}": cv2.dilate(mask, kernel)}


def network_maps(models: dict[str, torch.nn.Module], near_frame: np.ndarray,
                 far_frame: np.ndarray) -> dict[str, np.ndarray]:
    """Each model's final map of the near frame (1 = near), near frame given first and then second."""
    n, f = (torch.from_numpy(x)[None, None] for x in (near_frame, far_frame))
    maps = {}
    for name, model in models.items():
        first, second = maps_both_orders(model, n, f)
        maps[f"{name}, near first"], maps[f"{name}, near second"] = first, 1.0 - second
    return maps


def score_maps(maps: dict[str, np.ndarray], near_frame: np.ndarray, far_frame: np.ndarray,
               sharp: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics and PSNR of each map's fused image (8-bit levels)."""
    a, b, gt = (to_uint8(x).astype(np.float64) for x in (near_frame, far_frame, sharp))
    scores = {}
    for name, p in maps.items():
        fused = np.round(p * a + (1.0 - p) * b)
        values = compute_all([a, b], fused, gt=gt)
        scores[name] = np.array([values[c] for c in COLUMNS])
    return scores


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", action="append", default=[])
    parser.add_argument("--images", type=Path, default=BSDS / "images")
    parser.add_argument("--segments", type=Path, default=BSDS / "segments")
    parser.add_argument("--per-image", type=int, default=1)
    parser.add_argument("--px", type=int, default=3, help="erosion / dilation of the near object, px")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    models = {w: load_model(w, "cpu").eval() for w in args.weights}
    rows: dict[tuple[str, str], list[np.ndarray]] = {}
    for index, gray, near in held_out_scenes(args.images, args.segments, args.per_image, args.seed):
        for defocus, blur in DEFAULT_BLUR.items():
            rng = np.random.default_rng([args.seed, index, defocus == "layered"])
            near_frame, far_frame = near_far_pair(gray, near, defocus, rng, blur)
            maps = {name: m.astype(np.float64) for name, m in shifted_masks(near, args.px).items()}
            maps.update(network_maps(models, near_frame, far_frame))
            for name, values in score_maps(maps, near_frame, far_frame, gray).items():
                rows.setdefault((defocus, name), []).append(values)

    print("| defocus | map | " + " | ".join(COLUMNS) + " |\n|---|---|" + "---|" * len(COLUMNS))
    for (defocus, name), values in rows.items():
        values, truth = np.array(values), np.array(rows[(defocus, "truth")])
        wins = (values > truth).sum(axis=0)
        cells = [(f"{m:.2f}" if column == "PSNR" else f"{m:.4f}") + ("" if name == "truth" else f" ({w}/{len(values)})")
                 for column, m, w in zip(COLUMNS, values.mean(axis=0), wins)]
        print(f"| {defocus} | {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
