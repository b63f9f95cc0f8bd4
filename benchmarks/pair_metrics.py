"""How the six gacn26 means answer changes to a pair's band, next to the truth's answer on the boundary pairs.

Issue 21 asks, for pairs, +1.5 dB and -40% band MSE on the boundary benchmark's pairs (ground truth) while each of
the six reference-free means on the 26 real GACN pairs stays within 0.001 of today's. This script puts both sides
of every candidate change side by side. Each variant starts from GACN's fused pair (the default, ``F0``) and the
pair refiner's (``focusfuse-blend-pairs``, ``F1``), for the 26 real pairs and the boundary pairs alike:

- ``pair refiner``: F1;
- ``refiner, changes > 3 levels`` / ``<= 3 levels``: F1 where it differs from F0 by more (or not more) than 3
  levels (RMS over the channels), F0 elsewhere;
- ``hard per-pixel choice``: where F1 differs from F0, the frame closer to F1 at that pixel (a copy of a frame's
  pixel there; GACN's own pixels elsewhere);
- ``+-1 level of noise near GACN's band``: F0 plus noise of -1, 0 or +1 (per channel, seeded by ``--seed``) within
  4 px of GACN's soft band (0.02 < p < 0.98), a change no one can see: how sensitive the measures are.

Printed per variant: the boundary pairs' PSNR (mean of per-pair PSNR) and band MSE against F0's, and each of the
six means' change (x1000; the issue allows -1).

    python benchmarks/pair_metrics.py --markdown /tmp/pair-metrics.md
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from boundary import Scene, pair_scenes, score, summary, to_psnr
from focusfuse import fuse_pair
from focusfuse.evaluation.metrics import METRIC_NAMES, compute_all, to_gray_matlab
from focusfuse.io.images import read_image
from focusfuse.methods.gacn.weights import load_model
from quality import PAIRS

PAIR_REFINER = "focusfuse-blend-pairs"
SMALL_CHANGE = 3.0  # levels (8-bit), RMS over the channels
NOISE_MARGIN = 4  # px around GACN's soft band


@dataclass
class FusedPair:
    """One pair's frames, GACN's fused image and final map, the pair refiner's image (8-bit), and the scene."""

    a: np.ndarray
    b: np.ndarray
    gacn: np.ndarray
    refined: np.ndarray
    decision_map: np.ndarray
    scene: Scene | None = None


Variant = Callable[[FusedPair], np.ndarray]


def fuse_both(model, a: np.ndarray, b: np.ndarray, scene: Scene | None = None) -> FusedPair:
    gacn = fuse_pair(a, b, weights=model, device="cpu", boundary_blend="off")
    refined = fuse_pair(a, b, weights=model, device="cpu", boundary_blend=PAIR_REFINER)
    return FusedPair(a, b, gacn.fused, refined.fused, gacn.decision_map, scene)


def per_pixel(x: np.ndarray) -> np.ndarray:
    """Channel mean of a squared difference (an HxW or HxWxC array -> HxW)."""
    return x.mean(axis=-1) if x.ndim == 3 else x


def channels(mask: np.ndarray, like: np.ndarray) -> np.ndarray:
    return mask[..., None] if like.ndim == 3 else mask


def change(pair: FusedPair) -> np.ndarray:
    """RMS over the channels of the refiner's change to GACN's image, per pixel."""
    return np.sqrt(per_pixel((pair.refined.astype(np.float64) - pair.gacn.astype(np.float64)) ** 2))


def refiner_where(keep: Callable[[np.ndarray], np.ndarray]) -> Variant:
    def variant(pair: FusedPair) -> np.ndarray:
        return np.where(channels(keep(change(pair)), pair.gacn), pair.refined, pair.gacn)
    return variant


def hard_choice(pair: FusedPair) -> np.ndarray:
    def distance(frame: np.ndarray) -> np.ndarray:
        return per_pixel((pair.refined.astype(np.float64) - frame.astype(np.float64)) ** 2)
    chosen = np.where(channels(distance(pair.a) <= distance(pair.b), pair.a), pair.a, pair.b)
    return np.where(channels(change(pair) > 0, pair.gacn), chosen, pair.gacn)


def band_noise(seed: int) -> Variant:
    rng = np.random.default_rng(seed)

    def variant(pair: FusedPair) -> np.ndarray:
        soft = (pair.decision_map > 0.02) & (pair.decision_map < 0.98)
        near = channels(ndimage.binary_dilation(soft, iterations=NOISE_MARGIN), pair.gacn)
        noise = rng.integers(-1, 2, size=pair.gacn.shape) * near
        return np.clip(pair.gacn.astype(np.int64) + noise, 0, 255).astype(np.uint8)
    return variant


def variants(seed: int) -> dict[str, Variant]:
    return {
        "pair refiner": lambda pair: pair.refined,
        f"refiner, changes > {SMALL_CHANGE:g} levels": refiner_where(lambda c: c > SMALL_CHANGE),
        f"refiner, changes <= {SMALL_CHANGE:g} levels": refiner_where(lambda c: c <= SMALL_CHANGE),
        "hard per-pixel choice": hard_choice,
        "+-1 level of noise near GACN's band": band_noise(seed),
    }


def six_means(pairs: list[FusedPair], fused: Callable[[FusedPair], np.ndarray]) -> dict[str, float]:
    totals = dict.fromkeys(METRIC_NAMES, 0.0)
    for pair in pairs:
        gray = [to_gray_matlab(x) for x in (pair.a, pair.b, fused(pair))]  # uint8 in, as evaluate reads files
        values = compute_all(gray[:2], gray[2], None)
        for name in METRIC_NAMES:
            totals[name] += values[name] / len(pairs)
    return totals


def truth_scores(pairs: list[FusedPair], fused: Callable[[FusedPair], np.ndarray]) -> dict[str, float]:
    return summary([score(fused(pair), None, pair.scene) for pair in pairs])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="GACN weights (default: the shipped ones)")
    parser.add_argument("--pairs", type=int, default=40, help="boundary pairs (as benchmarks/boundary.py)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    if not PAIRS.is_dir():
        raise SystemExit(f"needs the gacn26 pairs in {PAIRS} (set FOCUSFUSE_SHARED)")

    start = time.perf_counter()
    model = load_model(args.weights, "cpu")
    real = [fuse_both(model, read_image(first), read_image(first.with_name(first.name.replace("_1.", "_2."))))
            for first in sorted(PAIRS.glob("*_1.png"))]
    rendered = [fuse_both(model, *scene.frames, scene=scene)
                for scene in pair_scenes(args.pairs, (2.0, 8.0), 6, args.seed)]
    base_means, base_truth = six_means(real, lambda p: p.gacn), truth_scores(rendered, lambda p: p.gacn)

    lines = ["| variant | boundary pairs PSNR | band MSE | " + " | ".join(f"{m} (x1000)" for m in METRIC_NAMES)
             + " |", "|---|---|---|" + "---|" * len(METRIC_NAMES),
             f"| GACN (default) | {base_truth['psnr']:.2f} | {base_truth['mse_band']:.1f} | "
             + " | ".join(f"{base_means[m]:.4f}" for m in METRIC_NAMES) + " |"]
    for name, variant in variants(args.seed).items():
        means, truth = six_means(real, variant), truth_scores(rendered, variant)
        band = truth["mse_band"] / base_truth["mse_band"] - 1
        lines.append(f"| {name} | {truth['psnr'] - base_truth['psnr']:+.2f} dB | {band:+.0%} | "
                     + " | ".join(f"{(means[m] - base_means[m]) * 1000:+.2f}" for m in METRIC_NAMES) + " |")
        print(lines[-1], flush=True)
    table = "\n".join(lines) + "\n"
    print(f"\n{table}\n({len(real)} real pairs, {len(rendered)} boundary pairs, {time.perf_counter() - start:.0f} s;"
          f" band PSNR of GACN {to_psnr(base_truth['mse_band']):.2f})")
    if args.markdown:
        args.markdown.write_text(table)


if __name__ == "__main__":
    main()
