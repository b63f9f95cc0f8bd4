"""Fused V-4 against an earlier output: pixels within 1 LSB, identical pixels, equal index maps.

The engine can be given fixed transforms (``--transforms``, saved by an earlier run with ``--save-transforms``),
optionally all shifted by ``--shift`` px, to separate what the engine changes from what the alignment changes.

    python benchmarks/v4_parity.py --save-transforms before.npz --out before      # on the earlier commit
    python benchmarks/v4_parity.py --before before                                  # now, own alignment
    python benchmarks/v4_parity.py --before before --transforms before.npz          # now, the earlier transforms
    python benchmarks/v4_parity.py --before before --transforms before.npz --shift 0.002
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import focusfuse
from focusfuse.io.images import read_image, write_image
from shared_data import SHARED

V4 = SHARED / "data" / "stacks" / "V-4"


def fixed_alignment(path: Path, shift: float):
    """An alignment estimate that returns the saved transforms (all but the reference shifted by ``shift`` px)."""
    from focusfuse.align.estimate import FrameAlignment, StackAlignment

    saved = np.load(path)
    reference = int(saved["reference"])

    def estimate(sources, mode, **kwargs):
        frames = []
        for i, (transform, gain, offset, ok) in enumerate(zip(saved["transforms"], saved["gains"], saved["offsets"],
                                                              saved["ok"])):
            if i != reference and shift:
                transform = np.array([[1.0, 0.0, shift], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ transform
            frames.append(FrameAlignment(transform, float(gain), float(offset), bool(ok)))
        return StackAlignment(reference, frames, tuple(saved["shape"]))

    return estimate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="folder with an earlier fused.png and index.png")
    parser.add_argument("--out", type=Path, default=None, help="write fused.png and index.png here")
    parser.add_argument("--transforms", type=Path, default=None, help="use these saved transforms")
    parser.add_argument("--shift", type=float, default=0.0)
    parser.add_argument("--save-transforms", type=Path, default=None)
    args = parser.parse_args()
    if args.transforms is not None:
        import focusfuse.engine.alignment as alignment

        alignment.estimate_stack_alignment = fixed_alignment(args.transforms, args.shift)
    result = focusfuse.fuse_stack(V4)
    if args.save_transforms is not None:
        frames = result.alignment.frames
        np.savez(args.save_transforms, transforms=np.stack([f.transform for f in frames]),
                 gains=np.array([f.gain for f in frames]), offsets=np.array([f.offset for f in frames]),
                 ok=np.array([f.ok for f in frames]), reference=result.alignment.reference,
                 shape=np.array(result.alignment.shape))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        write_image(args.out / "fused.png", result.fused)
        write_image(args.out / "index.png", result.index_map)
    if args.before is not None:
        before = read_image(args.before / "fused.png").astype(int)
        difference = np.abs(before - result.fused.astype(int)).reshape(before.shape[0], before.shape[1], -1)
        same_index = read_image(args.before / "index.png") == result.index_map
        print(f"pixels within 1 LSB {100 * (difference <= 1).all(axis=2).mean():.2f}%, identical "
              f"{100 * (difference == 0).all(axis=2).mean():.2f}%, index maps equal {100 * same_index.mean():.2f}%")


if __name__ == "__main__":
    main()
