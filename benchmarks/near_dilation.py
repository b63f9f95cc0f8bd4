"""Near-object dilation: do the decision maps draw near objects wider than they are?

On the held-out images of focusfuse train (every 10th BSDS image), a random subset of each image's
segments is the near object; frame "near" is focused on it, frame "far" on the rest. Two defocus models:
the paper's Gaussian cut along the mask (``gauss``), and the layered disk PSF in which the defocused near
object spreads over the background (``layered``). Each pair is fused in both orders (near frame first,
then second) with the pipeline's final decision map, and scored against the mask:

- far -> near: share of all pixels that belong to the far frame but are taken from the near one;
- near -> far: the opposite error;
- ring: share of the far pixels within 10 px of the near object that are taken from the near frame.

    python benchmarks/near_dilation.py --weights weights/focusfuse-gacn.pt \
        --weights ../shared/reference/gacn_official/GACN.pkl
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from focusfuse.ops.color import to_gray, to_tensor
from focusfuse.methods.gacn.decision import decide_pair
from focusfuse.io.images import read_image
from focusfuse.evaluation.synthetic import layered_pair
from focusfuse.train.data import segment_mask, split_images
from focusfuse.methods.gacn.weights import load_model

from shared_data import SHARED  # noqa: E402
BSDS = SHARED / "data" / "train" / "bsds300"
RING = 10  # px
DEFAULT_BLUR = {"gauss": (1.5, 4.0), "layered": (2.0, 6.0)}  # Gaussian sigma / disk radius range, px


def near_far_pair(sharp: np.ndarray, near: np.ndarray, model: str, rng: np.random.Generator,
                  blur: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """(frame focused on the near object, frame focused on the far rest), gray float32 in [0, 1].

    ``blur``: range of the Gaussian sigma (``gauss``) or of the disk radius (``layered``), px.
    """
    if model == "gauss":
        s_near, s_far = rng.uniform(*blur, size=2)
        focused_near = near * sharp + (1 - near) * cv2.GaussianBlur(sharp, (0, 0), s_far)
        focused_far = (1 - near) * sharp + near * cv2.GaussianBlur(sharp, (0, 0), s_near)
    else:
        r_far, r_near = rng.uniform(*blur, size=2)
        focused_near, focused_far = layered_pair(sharp, near, r_far, r_near)
    noise = rng.uniform(0.0, 0.01)
    return tuple(np.clip(x + rng.normal(0, noise, x.shape), 0, 1).astype(np.float32)  # type: ignore[return-value]
                 for x in (focused_near, focused_far))


def maps_both_orders(model: torch.nn.Module, focused_near: torch.Tensor,
                     focused_far: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Final maps of frame A, near frame given first (A = near) and then second (A = far)."""
    first = decide_pair(model, focused_near, focused_far)[1][0, 0].numpy()
    second = decide_pair(model, focused_far, focused_near)[1][0, 0].numpy()
    return first, second


def held_out_scenes(images: Path, segments: Path, per_image: int, seed: int):
    """(index, sharp gray, near mask) for every held-out image, ``per_image`` masks each."""
    for i, path in enumerate(split_images(images)[1]):
        rng = np.random.default_rng([seed, i])
        gray = to_gray(to_tensor(read_image(path)))[0].numpy()  # as the pipeline sees it
        labels = read_image(segments / f"{path.stem}.png").astype(np.int32)
        for k in range(per_image):
            for _ in range(10):
                near = segment_mask(labels, rng)
                if 0.1 <= near.mean() <= 0.6:
                    break
            yield i * per_image + k, gray, near


def score(decided_near: np.ndarray, near: np.ndarray) -> np.ndarray:
    """(far -> near, near -> far, ring) shares for one map."""
    is_near = near > 0.5
    distance = cv2.distanceTransform((~is_near).astype(np.uint8), cv2.DIST_L2, 5)
    ring = ~is_near & (distance <= RING)
    return np.array([(decided_near & ~is_near).mean(), (~decided_near & is_near).mean(),
                     (decided_near & ring).sum() / max(int(ring.sum()), 1)])


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", action="append", required=True)
    parser.add_argument("--images", type=Path, default=BSDS / "images")
    parser.add_argument("--segments", type=Path, default=BSDS / "segments")
    parser.add_argument("--per-image", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--defocus", default="gauss,layered", help="comma-separated: gauss, layered")
    parser.add_argument("--gauss-sigma", type=float, nargs=2, default=DEFAULT_BLUR["gauss"], metavar=("LO", "HI"))
    parser.add_argument("--disk-radius", type=float, nargs=2, default=DEFAULT_BLUR["layered"], metavar=("LO", "HI"),
                        help="layered defocus: range of the disk radius in px")
    args = parser.parse_args()
    defocus_models = args.defocus.split(",")
    blur = {"gauss": tuple(args.gauss_sigma), "layered": tuple(args.disk_radius)}

    models = {w: load_model(w, "cpu").eval() for w in args.weights}
    totals = {(w, m, o): [] for w in args.weights for m in defocus_models for o in ("first", "second")}
    for index, gray, near in held_out_scenes(args.images, args.segments, args.per_image, args.seed):
        for defocus in defocus_models:
            rng = np.random.default_rng([args.seed, index, defocus == "layered"])
            focused_near, focused_far = (torch.from_numpy(x)[None, None] for x in near_far_pair(gray, near, defocus, rng, blur[defocus]))
            for w, model in models.items():
                first, second = maps_both_orders(model, focused_near, focused_far)
                totals[(w, defocus, "first")].append(score(first > 0.5, near))
                totals[(w, defocus, "second")].append(score(second <= 0.5, near))
    print("| weights | defocus | near frame | far -> near | near -> far | ring taken from near |\n|---|---|---|---|---|---|")
    for (w, defocus, order), rows in totals.items():
        far_near, near_far, ring = 100 * np.mean(rows, axis=0)
        print(f"| {w} | {defocus} | {order} | {far_near:.2f}% | {near_far:.2f}% | {ring:.1f}% |")


if __name__ == "__main__":
    main()
