"""Score weights on a fixed set of held-out synthetic pairs, the way `focusfuse train` validates.

Every 10th image of ``--images`` (natural order) is held out, as in training; ``--samples`` pairs per
image are generated once from ``--seed`` with the pair recipe (defaults, changed by ``--recipe KEY=VALUE``).
So weights from runs with different seeds or recipes can be compared on the same pairs:

    python benchmarks/validate.py --weights weights/focusfuse-gacn.pt --weights runs/x/best.pt \
        --recipe max_gain=0.06 --recipe max_border=6

``--swapped`` scores the same pairs with the frames in the other order (GACN is not exactly symmetric).
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import DataLoader, Dataset

from focusfuse.train.data import PairRecipe, recipe_overrides, validation_pairs
from focusfuse.train.loop import TrainConfig, validate
from focusfuse.methods.gacn.weights import load_model

from shared_data import SHARED  # noqa: E402
BSDS = SHARED / "data" / "train" / "bsds300"


class SwappedPairs(Dataset):
    """The same pairs with the frames in the other order: (B, A, 1 - mask)."""

    def __init__(self, pairs: Dataset) -> None:
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        a, b, mask = self.pairs[i]
        return b, a, 1.0 - mask


def held_out_pairs_parser(description: str) -> argparse.ArgumentParser:
    """Options shared by the scripts that score weights on focusfuse train's held-out pairs."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--weights", action="append", required=True, help="weights file or name (repeatable)")
    parser.add_argument("--images", default=str(BSDS / "images"))
    parser.add_argument("--segments", default=str(BSDS / "segments"))
    parser.add_argument("--seed", type=int, default=1, help="seed of the validation pairs (a run uses its seed + 1)")
    parser.add_argument("--samples", type=int, default=4, help="pairs per held-out image")
    parser.add_argument("--recipe", action="append", default=[], metavar="KEY=VALUE")
    return parser


def held_out_pairs(args: argparse.Namespace) -> Dataset:
    """The held-out pairs the options name, as focusfuse train makes them."""
    return validation_pairs(args.images, args.segments, samples_per_image=args.samples, seed=args.seed,
                            recipe=PairRecipe(**recipe_overrides(args.recipe)))


def main() -> None:
    parser = held_out_pairs_parser(__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--swapped", action="store_true",
                        help="give each pair's second frame first (the mask flips with it)")
    args = parser.parse_args()

    pairs = held_out_pairs(args)
    val_loader = DataLoader(SwappedPairs(pairs) if args.swapped else pairs, batch_size=16)
    cfg = TrainConfig(images=args.images, out="")  # loss weights as in training (Q_g weight 1)
    device = torch.device(args.device)
    recipe = ", ".join(args.recipe) or "default recipe"
    print(f"{len(val_loader.dataset)} pairs, seed {args.seed}, {recipe}" + (", frames swapped" if args.swapped else ""))
    print("| weights | val loss | Dice loss | Q_g | accuracy of the initial map |\n|---|---|---|---|---|")
    for weights in args.weights:
        scores = validate(load_model(weights, device), val_loader, device, cfg)
        print(f"| {weights} | {scores['val_loss']:.4f} | {scores['val_dice']:.4f} | {scores['val_qg']:.4f} "
              f"| {100 * scores['val_accuracy']:.2f}% |", flush=True)


if __name__ == "__main__":
    main()
