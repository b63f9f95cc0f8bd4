"""Order bias of GACN weights: does the decision depend on which frame comes first?

GACN's decision is a threshold on z, the output of the last 16->1 conv: y > 0 (frame A) exactly where
z > t, with t = -shift / scale of that block's BatchNorm (conv -> ReLU -> BatchNorm, then a positive SSE
gate). On the held-out synthetic pairs of focusfuse train (every 10th image, fixed seed) this scores the
decisions in both frame orders: accuracy in each, the share of pixels decided the same way in both, the
shares that go to the first (or the second) frame whichever it is, and where an uninformative activity
(all 0.5: the frames are equally sharp) goes.

    python benchmarks/order_bias.py --weights weights/focusfuse-gacn.pt \
        --weights ../shared/reference/gacn_official/GACN.pkl

``--calibrate-to OUT`` also writes the (single) --weights with the threshold of the best accuracy over
both orders (a 0.01 grid) moved into that BatchNorm bias; no other weight changes. This was tried for
the shipped weights (docs/model-card.md) and not adopted.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from focusfuse.methods.gacn.model import GACN, activity
from focusfuse.methods.gacn.weights import load_model, read_weights, save_weights
from validate import held_out_pairs, held_out_pairs_parser

THRESHOLD_STEP = 0.01


def decision_threshold(model: GACN) -> float:
    """The threshold t on z (DecisionPath.last_conv_output): -shift / scale of the last BatchNorm."""
    scale, shift = (v.item() for v in model.decision.blocks[-1].bn_scale_shift())
    if scale <= 0 or shift >= 0:
        raise ValueError(f"the last decision block is not a threshold on its conv (scale {scale:.4g}, "
                         f"shift {shift:.4g}): these weights cannot be calibrated")
    return -shift / scale


def set_decision_threshold(model: GACN, threshold: float) -> None:
    """Move the threshold on z to ``threshold`` (> 0) by changing the last BatchNorm bias only."""
    if threshold <= 0:
        raise ValueError(f"decision threshold must be > 0 (z passes a ReLU), got {threshold}")
    decision_threshold(model)  # the same checks
    bn = model.decision.blocks[-1].bn
    with torch.no_grad():
        bn.bias.copy_(bn.weight * (bn.running_mean - threshold) / torch.sqrt(bn.running_var + bn.eps))


@torch.no_grad()
def both_orders(model: GACN, pairs: Iterable[tuple[torch.Tensor, ...]],
                device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z for (A, B), z for (B, A), target: True where A is in focus), flattened over all pairs."""
    model.eval()
    given, swapped, targets = [], [], []
    for a, b, mask in pairs:
        sf_a, sf_b = model.focus_measure(torch.cat([a, b]).to(device)).chunk(2)  # each frame's features once
        given.append(model.decision.last_conv_output(activity(sf_a, sf_b)).flatten().cpu())
        swapped.append(model.decision.last_conv_output(activity(sf_b, sf_a)).flatten().cpu())
        targets.append(mask.flatten() > 0.5)
    return torch.cat(given), torch.cat(swapped), torch.cat(targets)


def threshold_scores(z_given: torch.Tensor, z_swapped: torch.Tensor, target: torch.Tensor,
                     threshold: float) -> dict[str, float]:
    """Accuracy in each frame order, their mean, the share of pixels decided the same in both orders, and
    the shares given to the first frame in both orders and to the second frame in both orders."""
    first_given, first_swapped = z_given > threshold, z_swapped > threshold
    given = (first_given == target).float().mean().item()
    swapped = (first_swapped == ~target).float().mean().item()
    return {"threshold": float(threshold), "accuracy": (given + swapped) / 2, "accuracy_given": given,
            "accuracy_swapped": swapped, "order_consistency": (first_given != first_swapped).float().mean().item(),
            "first_in_both": (first_given & first_swapped).float().mean().item(),
            "second_in_both": (~first_given & ~first_swapped).float().mean().item()}


def best_threshold(z_given: torch.Tensor, z_swapped: torch.Tensor, target: torch.Tensor, current: float,
                   step: float = THRESHOLD_STEP) -> dict[str, float]:
    """Scores at the threshold (a grid of ``step`` up to twice ``current`` or 1) with the best mean accuracy
    over both frame orders."""
    grid = np.round(np.arange(step, max(1.0, 2 * current) + step / 2, step), 6)
    return max((threshold_scores(z_given, z_swapped, target, t) for t in grid), key=lambda s: s["accuracy"])


@torch.no_grad()
def tie_preference(model: GACN, size: int = 64) -> float:
    """z minus the threshold where every activity channel is 0.5 (> 0: the first frame wins ties)."""
    model.eval()
    z = model.decision.last_conv_output(torch.full((1, 64, size, size), 0.5))
    return z[0, 0, size // 2, size // 2].item() - decision_threshold(model)


def main() -> None:
    parser = held_out_pairs_parser(__doc__.splitlines()[0])
    parser.add_argument("--calibrate-to", type=Path, default=None, help="write calibrated weights here")
    args = parser.parse_args()
    if args.calibrate_to and len(args.weights) != 1:
        parser.error("--calibrate-to takes a single --weights")

    pairs = held_out_pairs(args)
    print(f"{len(pairs)} held-out pairs, seed {args.seed}, {', '.join(args.recipe) or 'default recipe'}")
    print("| weights | threshold t | accuracy A,B / B,A / mean | same in both orders | first frame in both "
          "| second frame in both | tie: z - t |\n|---|---|---|---|---|---|---|")

    def row(label: str, s: dict[str, float], tie: float) -> None:
        print(f"| {label} | {s['threshold']:.4f} | {100 * s['accuracy_given']:.2f}% / "
              f"{100 * s['accuracy_swapped']:.2f}% / {100 * s['accuracy']:.2f}% | {100 * s['order_consistency']:.2f}% "
              f"| {100 * s['first_in_both']:.2f}% | {100 * s['second_in_both']:.2f}% | {tie:+.4f} |", flush=True)

    for weights in args.weights:
        model = load_model(weights, "cpu")
        current = decision_threshold(model)
        z_given, z_swapped, target = both_orders(model, DataLoader(pairs, batch_size=16))
        row(weights, threshold_scores(z_given, z_swapped, target, current), tie_preference(model))
        if args.calibrate_to:
            best = best_threshold(z_given, z_swapped, target, current)
            set_decision_threshold(model, best["threshold"])
            row(f"{weights}, calibrated", best, tie_preference(model))
            _, metadata = read_weights(weights)
            save_weights(model, args.calibrate_to, {**metadata, "decision_threshold": best})
            print(f"written {args.calibrate_to}")


if __name__ == "__main__":
    main()
