"""CPU/device parity on the 26 gacn26 pairs: the same fuse_pair on the CPU backend and on --device.

Per pair: the share of fused pixels (all channels) within 1 LSB of the CPU result, the PSNR between the two,
and the share of final decision map pixels within 1/255. Prints a table; --json writes the summary.

    python benchmarks/device_parity.py --device cuda --json parity.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from focusfuse import fuse_pair
from focusfuse.methods.gacn.weights import load_model
from shared_data import SHARED

PAIRS = SHARED / "data" / "test" / "gacn26"


def compare(weights: str | None, device: str) -> dict:
    model = load_model(weights, "cpu")
    rows = []
    for first in sorted(PAIRS.glob("*_1.png")):
        name = first.name[: -len("_1.png")]
        second = PAIRS / f"{name}_2.png"
        cpu = fuse_pair(first, second, weights=model, device="cpu")
        dev = fuse_pair(first, second, weights=model, device=device)
        diff = np.abs(cpu.fused.astype(np.int32) - dev.fused.astype(np.int32))
        mse = float(np.mean(diff.astype(np.float64) ** 2))
        rows.append({"name": name, "within_1lsb": float(np.mean(diff <= 1)),
                     "psnr_db": float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse)),
                     "map_within": float(np.mean(np.abs(cpu.decision_map - dev.decision_map) <= 1 / 255))})
        print(f"{name:22s} within 1 LSB {100 * rows[-1]['within_1lsb']:8.4f}%  PSNR {rows[-1]['psnr_db']:7.2f} dB  "
              f"decision map within 1/255 {100 * rows[-1]['map_within']:8.4f}%", flush=True)
    return {"device": device, "pairs": len(rows), "worst_within_1lsb": min(r["within_1lsb"] for r in rows),
            "worst_psnr_db": min(r["psnr_db"] for r in rows), "worst_map_within": min(r["map_within"] for r in rows),
            "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    summary = compare(args.weights, args.device)
    print(f"worst of {summary['pairs']} pairs: {100 * summary['worst_within_1lsb']:.4f}% within 1 LSB, "
          f"{summary['worst_psnr_db']:.2f} dB")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
