"""Score weights on a fixed set of held-out synthetic pairs, the way `focusfuse train` validates.

Every 10th image of ``--images`` (natural order) is held out, as in training; ``--samples`` pairs per
image are generated once from ``--seed`` with the pair recipe (defaults, changed by ``--recipe KEY=VALUE``).
So weights from runs with different seeds or recipes can be compared on the same pairs:

    python benchmarks/validate.py --weights weights/focusfuse-gacn.pt --weights runs/x/best.pt \
        --recipe max_gain=0.06 --recipe max_border=6
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from focusfuse.train.data import FocusPairs, PairRecipe, recipe_overrides, split_images
from focusfuse.train.loop import TrainConfig, validate
from focusfuse.weights import load_model

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BSDS = SHARED / "data" / "train" / "bsds300"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", action="append", required=True, help="weights file or name (repeatable)")
    parser.add_argument("--images", default=str(BSDS / "images"))
    parser.add_argument("--segments", default=str(BSDS / "segments"))
    parser.add_argument("--seed", type=int, default=1, help="seed of the validation pairs (a run uses its seed + 1)")
    parser.add_argument("--samples", type=int, default=4, help="pairs per held-out image")
    parser.add_argument("--recipe", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    _, held_out = split_images(args.images)  # as focusfuse train splits them
    pairs = FocusPairs(held_out, args.segments, samples_per_image=args.samples, seed=args.seed,
                       recipe=PairRecipe(**recipe_overrides(args.recipe)), fixed=True)
    val_loader = DataLoader(pairs, batch_size=16)
    cfg = TrainConfig(images=args.images, out="")  # loss weights as in training (Q_g weight 1)
    device = torch.device(args.device)
    recipe = ", ".join(args.recipe) or "default recipe"
    print(f"{len(val_loader.dataset)} pairs, seed {args.seed}, {recipe}")
    print("| weights | val loss | Dice loss | Q_g | accuracy of the initial map |\n|---|---|---|---|---|")
    for weights in args.weights:
        scores = validate(load_model(weights, device), val_loader, device, cfg)
        print(f"| {weights} | {scores['val_loss']:.4f} | {scores['val_dice']:.4f} | {scores['val_qg']:.4f} "
              f"| {100 * scores['val_accuracy']:.2f}% |", flush=True)


if __name__ == "__main__":
    main()
