"""V-4 microscope stack: fusion without and with alignment, time and peak memory, and a before/after crop.

Runs `focusfuse stack ../shared/data/stacks/V-4 -o v4.png` twice in child processes (--align none, then the
default --align auto), records wall time and peak RSS, and writes docs/images/v4-alignment.jpg: the same
crop of both results side by side (left: no alignment, right: aligned), enlarged 2x.

    python benchmarks/v4_alignment.py --weights weights/focusfuse-gacn.pt --crop 1120,60,1600,420
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import run_measured  # noqa: E402

from shared_data import SHARED  # noqa: E402
V4 = SHARED / "data" / "stacks" / "V-4"
DOCS = Path(__file__).resolve().parents[1] / "docs"


def fuse(out: Path, weights: str, align: str, frames: int | None) -> dict:
    inputs = [str(p) for p in sorted(V4.glob("*.jpg"))[:frames]] if frames else [str(V4)]
    cmd = [sys.executable, "-m", "focusfuse.cli", "stack", *inputs, "-o", str(out), "--weights", weights,
           "--align", align, "--overwrite", "--json"]
    code, stdout, stderr, seconds, peak = run_measured(cmd)
    if code != 0:
        raise RuntimeError(stderr)
    report = json.loads(stdout.strip().splitlines()[-1])
    return {"wall_s": seconds, "peak_rss_mb": peak, **report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--crop", default="0,0,480,360", help="x0,y0,x1,y1 of the before/after crop")
    parser.add_argument("--frames", type=int, default=None, help="only the first N frames (memory check)")
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp/focusfuse-v4"))
    parser.add_argument("--crop-only", action="store_true", help="only redo the crop from the last run's images")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for align in ("none", "auto") if not args.crop_only else ():
        out = args.out_dir / f"v4_{align}.png"
        results[align] = fuse(out, args.weights, align, args.frames)
        r = results[align]
        print(f"--align {align}: {r['frames_used']} frames, {r['seconds']:.1f} s in focusfuse "
              f"({r['wall_s']:.1f} s wall), peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    if args.frames:
        return
    x0, y0, x1, y1 = (int(v) for v in args.crop.split(","))
    crops = [cv2.imread(str(args.out_dir / f"v4_{a}.png"))[y0:y1, x0:x1] for a in ("none", "auto")]
    crops = [cv2.resize(c, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST) for c in crops]
    gap = np.full((crops[0].shape[0], 12, 3), 255, np.uint8)
    (DOCS / "images").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(DOCS / "images" / "v4-alignment.jpg"), np.hstack([crops[0], gap, crops[1]]),
                [cv2.IMWRITE_JPEG_QUALITY, 92])
    print(f"wrote {DOCS / 'images' / 'v4-alignment.jpg'}")


if __name__ == "__main__":
    main()
