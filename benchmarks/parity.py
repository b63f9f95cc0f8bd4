"""Checkpoint parity: focusfuse with the official GACN.pkl vs the authors' own outputs on gacn26.

Prints, over the 26 pairs, the PSNR of our fused image against NAME_fused.png and the share of pixels
where our final (and initial) decision map is within 1/255 of NAME_dmfinal.png (NAME_dm.png).

    python benchmarks/parity.py
"""

from __future__ import annotations


import numpy as np
import torch

from focusfuse.ops.color import to_tensor
from focusfuse.backends.select import select_backend
from focusfuse.engine.fuse import fuse_tensors
from focusfuse.methods.gacn.network import GacnNetwork
from focusfuse.io.images import read_image
from focusfuse.methods.gacn.weights import load_model

from shared_data import SHARED  # noqa: E402
PAIRS = SHARED / "data" / "test" / "gacn26"
REFERENCE = SHARED / "reference" / "gacn_official"


def main() -> None:
    net = GacnNetwork(load_model(REFERENCE / "GACN.pkl", "cpu"), select_backend("cpu"))
    rows = []
    for first in sorted(PAIRS.glob("*_1.png")):
        name = first.name[: -len("_1.png")]
        with torch.inference_mode():
            fused, p, p0 = fuse_tensors(net, to_tensor(read_image(first)), to_tensor(read_image(PAIRS / f"{name}_2.png")))
        ours = np.round(fused.clamp(0, 1).permute(1, 2, 0).squeeze(-1).numpy() * 255)
        mse = np.mean((ours - read_image(REFERENCE / "gacn26" / f"{name}_fused.png").astype(np.float64)) ** 2)
        psnr = float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
        final = read_image(REFERENCE / "gacn26" / f"{name}_dmfinal.png") / 65535.0
        initial = read_image(REFERENCE / "gacn26" / f"{name}_dm.png") / 65535.0
        rows.append((name, psnr, np.mean(np.abs(p.numpy() - final) <= 1 / 255), np.mean(np.abs(p0.numpy() - initial) <= 1 / 255)))
        print(f"{name:22s} PSNR {psnr:7.2f} dB  final DM within 1/255: {100 * rows[-1][2]:.4f}%  "
              f"initial DM: {100 * rows[-1][3]:.4f}%", flush=True)
    psnrs, finals, initials = zip(*[(r[1], r[2], r[3]) for r in rows])
    print(f"min PSNR {min(psnrs):.2f} dB (mean {np.mean(psnrs):.2f}); final DM agreement min "
          f"{100 * min(finals):.4f}% mean {100 * np.mean(finals):.4f}%; initial DM min {100 * min(initials):.4f}%")


if __name__ == "__main__":
    main()
