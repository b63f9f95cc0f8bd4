"""How far any choice among blend candidates could go: oracle ceilings on the blend training's validation crops.

The boundary blend (``methods/gacn/boundary_blend.py``) streams: each frame's weight depends on that frame
alone. Could weights that compare frames, or a per-pixel choice among a few streamed blends, do much better?
This script answers with oracles, which see the truth. On the crops of ``focusfuse train --method blend``'s
held-out images (the same renders as its validation), inside the band, it scores:

- the plain blend (Laplacian weights) and the learned blend (the default weights, or ``--weights``);
- for candidate sets, the candidate closest to the truth per pixel and over 3x3, 7x7 and 15x15 windows:
  the frames; the learned blend and GACN's hard switch; blends of frames binned by their position in the
  stack (``--bins`` hat-shaped bins, a coarse depth) with the learned blend and GACN's;
- detail transfer: the learned blend plus ``alpha`` times (the sharpest frame's high-pass - its own).

Every number is the crops' MSE (8-bit scale, the loss of ``focusfuse train --method blend``). Per-window
choices are what a mixing network could at best learn from local evidence; per-pixel ones are not reachable.

    python benchmarks/blend_ceilings.py --markdown ceilings.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from focusfuse.methods.gacn.blend_net import BlendNet, load_blend_net
from focusfuse.methods.gacn.blend_refiner import bin_weights
from focusfuse.methods.gacn.boundary_blend import SHARPNESS_POWER, laplacian_energy
from focusfuse.ops.color import to_gray
from focusfuse.ops.filters import gaussian_blur
from focusfuse.train.blend import FRAMES, MARGIN, make_crops
from focusfuse.train.runs import training_split

from shared_data import SHARED  # noqa: E402

BSDS = SHARED / "data" / "train" / "bsds300"
WINDOWS = (1, 3, 7, 15)


def candidates(batch: torch.Tensor, net: BlendNet, bins: int) -> dict[str, torch.Tensor]:
    """Named (B, N, 3, H, W) candidate sets of uint8 crops, in [0, 1]; also 'truth', 'fused', 'band'."""
    x = batch.float() / 255.0
    b, _, h, w = x.shape
    frames = x[:, :3 * FRAMES].reshape(b, FRAMES, 3, h, w)
    truth, fused, band = x[:, 3 * FRAMES:3 * FRAMES + 3], x[:, 3 * FRAMES + 3:3 * FRAMES + 6], x[:, -1:]
    gray = to_gray(frames.reshape(-1, 3, h, w))
    log_energy = torch.log1p(laplacian_energy(gray))
    plain = (SHARPNESS_POWER * log_energy).reshape(b, FRAMES, 1, h, w)
    score = plain + net(gray, log_energy).reshape(b, FRAMES, 1, h, w)
    learned = (torch.softmax(score, 1) * frames).sum(1)
    hats = torch.tensor([bin_weights(k / (FRAMES - 1), bins) for k in range(FRAMES)],
                        device=x.device).clamp_min(1e-6)  # (FRAMES, bins): the refiner's bins
    binned = torch.einsum("bfkhw,bfchw->bkchw", torch.softmax(score + hats.log()[None, :, :, None, None], 1), frames)
    return {"truth": truth, "fused": fused, "band": band, "plain": (torch.softmax(plain, 1) * frames).sum(1)[:, None],
            "learned": learned[:, None], "frames": frames, "learned+gacn": torch.stack([learned, fused], 1),
            f"{bins} position bins+learned+gacn": torch.cat([binned, learned[:, None], fused[:, None]], 1),
            "sharpest": torch.take_along_dim(frames, score.argmax(1, keepdim=True).expand(-1, -1, 3, -1, -1), 1)}


def closest(candidates: torch.Tensor, truth: torch.Tensor, window: int) -> torch.Tensor:
    """Per pixel, the candidate whose squared error over the ``window`` x ``window`` neighbourhood is least."""
    error = ((candidates - truth[:, None]) ** 2).sum(2)
    if window > 1:
        error = F.avg_pool2d(error, window, 1, window // 2, count_include_pad=False)
    pick = error.argmin(1, keepdim=True)[:, :, None].expand(-1, -1, candidates.shape[2], -1, -1)
    return torch.take_along_dim(candidates, pick, 1)[:, 0]


def high_pass(image: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    return image - gaussian_blur(image, 2 * round(3 * sigma) + 1, sigma)


def scores(crops: torch.Tensor, net: BlendNet, bins: int, alphas: tuple[float, ...]) -> dict[str, float]:
    """Mean crop MSE (8-bit scale, inside the training's margin) of every blend and oracle."""
    inner = (slice(None), slice(None), slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))
    totals: dict[str, float] = {}
    with torch.no_grad():
        for start in range(0, len(crops), 16):
            c = candidates(crops[start:start + 16], net, bins)
            truth, fused, band = c.pop("truth"), c.pop("fused"), c.pop("band")
            sharpest, learned = c.pop("sharpest")[:, 0], c["learned"][:, 0]
            outputs = {}
            for name, cands in c.items():
                for window in WINDOWS if cands.shape[1] > 1 else (1,):
                    label = name if cands.shape[1] == 1 else f"oracle {window}x{window}: {name}"
                    outputs[label] = closest(cands, truth, window)
            for alpha in alphas:
                detail = high_pass(sharpest) - high_pass(learned)
                outputs[f"detail transfer, alpha {alpha}"] = learned + alpha * detail
            for label, out in outputs.items():
                out = fused + band * (out - fused)
                totals[label] = totals.get(label, 0.0) + F.mse_loss(out[inner], truth[inner]).item() * 255**2 * len(out)
    return {label: total / len(crops) for label, total in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=BSDS / "images")
    parser.add_argument("--segments", type=Path, default=BSDS / "segments")
    parser.add_argument("--weights", default=None, help="blend weights (default: the shipped ones)")
    parser.add_argument("--bins", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    if not args.images.is_dir():
        raise SystemExit(f"{args.images}: not found (../shared/data/train/bsds300; set FOCUSFUSE_SHARED)")
    started = time.perf_counter()
    _, validation = training_split(args.images)
    crops = make_crops(validation, args.segments, 1, args.workers)  # train_blend's validation crops (seed 0 + 1)
    result = scores(crops, load_blend_net(args.weights), args.bins, (0.25, 0.5, 1.0))
    learned = result["learned"]
    lines = [f"{len(crops)} validation crops, {time.perf_counter() - started:.0f} s", "",
             "| blend or oracle | crop MSE | vs learned |", "|---|---|---|"]
    lines += [f"| {label} | {value:.2f} | {100 * (value / learned - 1):+.1f}% |" for label, value in result.items()]
    text = "\n".join(lines)
    print(text)
    if args.markdown is not None:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
