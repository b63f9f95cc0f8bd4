"""Compare stack strategies on synthetic focus stacks with known ground truth.

Stacks are rendered from BSDS300 images (the held-out validation images of focusfuse.train) with the
layered disk-PSF defocus model of focusfuse.evaluation.synthetic: every human-labelled segment is a depth layer
at a random depth, N focus planes span the depth range. Each strategy's fused image is scored
against the sharp original (PSNR, SSIM on gray) and its index map against the ideal one.

    python benchmarks/stack_strategies.py --weights ../shared/reference/gacn_official/GACN.pkl \
        --stacks 20 --frames 8 --markdown docs/stack-strategies.md

``--strategies calibrated --reduce 1 --reduce 2`` compares the decision path at full and half resolution.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from focusfuse.ops.color import to_gray, to_tensor
from focusfuse.io.images import read_image
from focusfuse.evaluation.metrics import psnr as psnr_gray
from focusfuse.evaluation.metrics import ssim, to_gray_matlab
from focusfuse.methods.gacn.model import GACN
from focusfuse import fuse_stack
from focusfuse.evaluation.synthetic import make_stack
from focusfuse.methods.gacn.weights import load_model
from focusfuse.train.data import segment_depth

from shared_data import SHARED  # noqa: E402
BSDS = SHARED / "data" / "train" / "bsds300"


def logodds_baseline(model: GACN, frames: list[np.ndarray]) -> np.ndarray:
    """Experimental rule: per-pixel argmax of the pre-sigmoid logits against frame 1 (not shipped)."""
    with torch.inference_mode():
        grays = [to_gray(to_tensor(f))[None] for f in frames]
        sf_base = model.focus_measure(grays[0])
        scores = [torch.zeros_like(grays[0][0, 0])]
        for gray in grays[1:]:
            scores.append(-model.decision_logit(sf_base, model.focus_measure(gray))[0, 0])
        index = torch.stack(scores).argmax(0).numpy()
    stack = np.stack(frames)
    return np.take_along_axis(stack, index[None, :, :, None], axis=0)[0], index


def psnr(x: np.ndarray, truth: np.ndarray) -> float:
    """PSNR over all channels, 0..255 scale."""
    return psnr_gray(x.reshape(x.shape[0], -1).astype(np.float64), truth.reshape(truth.shape[0], -1))


def max_champion_compose(model: GACN, frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Experimental (not shipped): the calibrated champion's hard index map from the initial maps, then a
    second pass composes the frames with boundary-refined one-hot weights."""
    from focusfuse.methods.gacn.decision import refine_decision_map
    from focusfuse.methods.gacn.model import initial_decision_map

    with torch.inference_mode():
        tensors = [to_tensor(f) for f in frames]
        grays = [to_gray(t)[None] for t in tensors]
        sf_best = model.focus_measure(grays[0])
        index = torch.zeros(grays[0].shape[-2:], dtype=torch.long)
        for j in range(1, len(frames)):
            sf = model.focus_measure(grays[j])
            p0 = initial_decision_map(model.decision_logit(sf_best, sf))
            sf_best = torch.maximum(sf_best, sf)
            index = torch.where(p0[0, 0] < 0.5, j, index)
        hard_gray = torch.stack([g[0, 0] for g in grays]).gather(0, index[None])[0][None, None]
        total = torch.zeros_like(tensors[0])
        weight = torch.zeros_like(grays[0][0])
        for j in range(len(frames)):
            onehot = (index == j).float()[None, None]
            if onehot.any():
                w = refine_decision_map(onehot, hard_gray, hard_gray).clamp(0, 1)[0]
                total = total + w * tensors[j]
                weight = weight + w
        fused = total / weight.clamp_min(1e-6)
        out = np.round(fused.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    return out, index.numpy()


def textured_mask(truth: np.ndarray) -> np.ndarray:
    """Pixels whose sharp neighbourhood has detail (index choice is ambiguous in flat areas)."""
    import cv2

    gray = to_gray_matlab(np.round(truth * 255))
    energy = cv2.GaussianBlur(np.abs(cv2.Laplacian(gray, cv2.CV_64F)), (0, 0), 2.0)
    return energy > np.percentile(energy, 50)


def score(fused: np.ndarray, index: np.ndarray, truth: np.ndarray, index_truth: np.ndarray,
          mask: np.ndarray) -> dict[str, float]:
    f8 = fused.astype(np.float64) if fused.dtype == np.uint8 else np.round(fused * 255)
    t8 = np.round(truth * 255)
    return {
        "psnr": psnr(f8, t8),
        "ssim": ssim(to_gray_matlab(f8), to_gray_matlab(t8)),
        "index_acc": float(np.mean(index == index_truth)),
        "index_acc_textured": float(np.mean(index[mask] == index_truth[mask])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None)
    parser.add_argument("--stacks", type=int, default=20)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--max-blur", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--strategies", default=None, help="comma-separated subset (default: all)")
    parser.add_argument("--reduce", type=int, action="append", default=None,
                        help="--reduce factor(s) for the fuse_stack strategies (repeatable; default 1)")
    args = parser.parse_args()

    from focusfuse.train.data import split_images

    model = load_model(args.weights, "cpu")
    _, validation = split_images(BSDS / "images")
    rng = np.random.default_rng(args.seed)
    strategies = ["calibrated", "calibration", "serial", "logodds (experimental)",
                  "two-pass compose (experimental)"]
    if args.strategies:
        strategies = [s for s in strategies if s.split()[0] in args.strategies.split(",")]
    variants = []
    for s in strategies:
        for r in args.reduce or [1]:
            if r == 1:
                variants.append(s)
            elif " " not in s:  # the experimental ones run outside fuse_stack, at full resolution only
                variants.append(f"{s}, reduce {r}")
    strategies = variants
    rows: dict[str, list[dict[str, float]]] = {s: [] for s in strategies}
    seconds: dict[str, float] = {s: 0.0 for s in strategies}
    best_frame = []
    for path in validation[: args.stacks]:
        image = read_image(path)
        depth = segment_depth(read_image(BSDS / "segments" / (path.stem + ".png")), rng)
        stack = make_stack(image, depth, args.frames, max_blur=args.max_blur)
        frames = [np.round(f * 255).astype(np.uint8) for f in stack.frames]
        mask = textured_mask(stack.truth)
        best_frame.append(max(psnr(f.astype(np.float64), np.round(stack.truth * 255)) for f in frames))
        for strategy in strategies:
            start = time.perf_counter()
            if strategy.startswith("logodds"):
                fused, index = logodds_baseline(model, frames)
            elif strategy.startswith("two-pass"):
                fused, index = max_champion_compose(model, frames)
            else:
                name, _, reduce = strategy.partition(", reduce ")
                result = fuse_stack(frames, strategy=name, weights=model, device="cpu", reduce=int(reduce or 1))
                fused, index = result.fused, result.index_map
            seconds[strategy] += time.perf_counter() - start
            rows[strategy].append(score(fused, index, stack.truth, stack.index_truth, mask))
        print(f"{path.stem}: " + "  ".join(f"{s.split()[0]} {rows[s][-1]['psnr']:.2f}" for s in strategies),
              flush=True)

    header = ("| strategy | PSNR (dB) | SSIM | index-map accuracy | accuracy, textured pixels | seconds/stack |\n"
              "|---|---|---|---|---|---|")
    lines = [header]
    for strategy in strategies:
        mean = {k: float(np.mean([r[k] for r in rows[strategy]])) for k in rows[strategy][0]}
        lines.append(f"| {strategy} | {mean['psnr']:.2f} | {mean['ssim']:.4f} | {100 * mean['index_acc']:.1f}% | "
                     f"{100 * mean['index_acc_textured']:.1f}% | {seconds[strategy] / len(rows[strategy]):.2f} |")
    lines.append(f"| (best single frame) | {np.mean(best_frame):.2f} | | | | |")
    for strategy in strategies:  # to three decimals, for rules that compare weights by a threshold
        print(f"{strategy}: mean PSNR {np.mean([r['psnr'] for r in rows[strategy]]):.3f} dB")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    main()
