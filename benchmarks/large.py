"""Large images: tiled vs untiled equality, and peak memory on huge 16-bit TIFF pairs and stacks.

Inputs are generated tile by tile as tiled (Big)TIFFs, so generating them needs little memory: a
texture of sinusoids whose defocus is applied analytically per pixel (a Gaussian blur of sigma
attenuates a sinusoid of angular frequency w by exp(-sigma^2 w^2 / 2)), with sigma growing with the
distance between a smooth depth map and each frame's focus plane. Fusion runs through the CLI in a
child process whose peak resident memory (and peak GPU memory) is recorded.

    python benchmarks/large.py equality                              # the CI-sized check, at full size
    python benchmarks/large.py pair --size 20000 --device cpu         # 16-bit RGB pair, BigTIFF
    python benchmarks/large.py pair --size 12000 --memory-limit 4G    # the memory limit is kept
    python benchmarks/large.py stack --size 8000 --frames 40 --device cuda
    ... --weights W --markdown docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import report_results, run_measured  # noqa: E402

TILE = 512
PIXEL_SIZE_UM = 0.25
BEGIN, END = "<!-- large:begin -->", "<!-- large:end -->"
# (amplitude, angular frequency in rad/px, direction in rad, phase)
WAVES = [(0.18, 0.9, 0.3, 0.1), (0.12, 0.55, 1.9, 1.3), (0.1, 0.31, 2.6, 0.7), (0.08, 1.4, 0.9, 2.1),
         (0.07, 0.17, 1.2, 0.4), (0.05, 2.2, 2.2, 1.7)]


def depth_at(y: np.ndarray, x: np.ndarray, size: int) -> np.ndarray:
    """A smooth depth map in [0, 1] (two tilted hills)."""
    u, v = x / size, y / size
    return 0.5 + 0.25 * np.sin(2 * np.pi * u * 1.3 + 0.5) * np.cos(2 * np.pi * v * 0.9) + 0.2 * (u - v)


def frame_tile(y0: int, x0: int, h: int, w: int, size: int, focus: float, max_sigma: float = 3.0) -> np.ndarray:
    """RGB uint16 pixels of one tile of the frame focused at depth ``focus``."""
    y, x = np.mgrid[y0:y0 + h, x0:x0 + w].astype(np.float32)
    sigma = max_sigma * np.abs(depth_at(y, x, size) - focus) * 2.0
    value = np.full((h, w), 0.45, np.float32)
    for amp, freq, angle, phase in WAVES:
        attenuation = np.exp(-0.5 * (sigma * freq) ** 2)
        value += amp * attenuation * np.sin(freq * (x * np.cos(angle) + y * np.sin(angle)) + phase)
    rgb = np.stack([value, 0.9 * value + 0.05, 1.1 * value - 0.05], axis=-1)
    return np.round(np.clip(rgb, 0, 1) * 65535).astype(np.uint16)


def write_frame(path: Path, size: int, focus: float) -> None:
    def tiles():
        for y0 in range(0, size, TILE):
            for x0 in range(0, size, TILE):
                yield frame_tile(y0, x0, TILE, TILE, size, focus)

    raw = size * size * 6
    tifffile.imwrite(path, tiles(), shape=(size, size, 3), dtype=np.uint16, tile=(TILE, TILE),
                     photometric="rgb", bigtiff=raw > 2**31, resolution=(1e4 / PIXEL_SIZE_UM,) * 2,
                     resolutionunit="CENTIMETER", metadata=None)


def run_cli(args: list[str]) -> dict:
    """Run focusfuse in a child process; its wall time and peak RSS."""
    code, stdout, stderr, seconds, peak = run_measured([sys.executable, "-m", "focusfuse.cli", *args])
    if code != 0:
        raise RuntimeError(stderr.strip())
    report = json.loads(stdout.strip().splitlines()[-1]) if "--json" in args else {}
    return {"seconds": seconds, "peak_rss_mb_children": peak, **report}


def check_output(path: Path, size: int) -> str:
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        res = page.get_resolution()
        assert page.dtype == np.uint16 and page.shape == (size, size, 3), (page.dtype, page.shape)
        assert abs(res[0] - 1e4 / PIXEL_SIZE_UM) < 1, res
        return f"uint16 {page.shape[1]}x{page.shape[0]}x3, tiled {page.is_tiled}, {res[0]:.0f} px/cm, bigtiff {tif.is_bigtiff}"


def equality(weights: str) -> list[str]:
    """Tiled vs untiled at the acceptance sizes: a 2000x2000 RGB pair and a 10-frame 1500x1500 stack."""
    from focusfuse import fuse_pair, fuse_stack

    rows = []
    pair = [(frame_tile(0, 0, 2000, 2000, 2000, f) >> 8).astype(np.uint8) for f in (0.3, 0.7)]
    whole = fuse_pair(*pair, weights=weights, device="cpu", tile_size=0)
    tiled = fuse_pair(*pair, weights=weights, device="cpu", tile_size=512)
    diff = np.abs(whole.fused.astype(int) - tiled.fused).max()
    rows.append(f"2000x2000 RGB pair, tiles of 512: max |fused difference| {diff} (8-bit)")
    frames = [(frame_tile(0, 0, 1500, 1500, 1500, f) >> 8).astype(np.uint8) for f in np.linspace(0, 1, 10)]
    whole = fuse_stack(frames, weights=weights, device="cpu", align="none", tile_size=0)
    tiled = fuse_stack(frames, weights=weights, device="cpu", align="none", tile_size=512)
    diff = np.abs(whole.fused.astype(int) - tiled.fused).max()
    same = np.array_equal(whole.index_map, tiled.index_map)
    rows.append(f"10-frame 1500x1500 RGB stack, tiles of 512: max |fused difference| {diff} (8-bit), "
                f"index maps identical: {same}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=["equality", "pair", "stack"])
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tile-size", type=int, default=None, help="default: chosen from the memory limit")
    parser.add_argument("--memory-limit", default=None, help="focusfuse's --memory-limit (default: its own)")
    parser.add_argument("--weights", required=True)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()

    if args.case == "equality":
        lines = equality(args.weights)
    else:
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            folder = Path(tmp, "frames")
            folder.mkdir()
            n = 2 if args.case == "pair" else args.frames
            start = time.perf_counter()
            for k, focus in enumerate(np.linspace(0.05, 0.95, n)):
                write_frame(folder / f"z{k:03d}.tif", args.size, float(focus))
            generated = time.perf_counter() - start
            out = Path(tmp, "fused.tif")
            inputs = sorted(folder.glob("*.tif"))
            command = ["pair", *map(str, inputs)] if args.case == "pair" else ["stack", str(folder), "--json"]
            cli = [*command, "-o", str(out), "--align", "none", "--weights", args.weights, "--device", args.device,
                   "--compression", "zlib"]
            cli += ["--tile-size", str(args.tile_size)] if args.tile_size is not None else []
            cli += ["--memory-limit", args.memory_limit] if args.memory_limit else []
            result = run_cli(cli)
            checked = check_output(out, args.size)
        gpu = result.get("peak_gpu_mb")
        lines = [f"{args.case}: {n} frames of {args.size}x{args.size} 16-bit RGB (tiled BigTIFF inputs, "
                 f"generated in {generated:.0f} s), device {args.device}, "
                 + (f"--tile-size {args.tile_size}, " if args.tile_size is not None else "")
                 + (f"--memory-limit {args.memory_limit}, " if args.memory_limit else "default memory limit, ")
                 + f"command {command[0]}: "
                 f"{result['seconds']:.0f} s, peak RSS {result['peak_rss_mb_children']:.0f} MB"
                 + (f", peak GPU {gpu:.0f} MB" if gpu else "") + f"; output {checked}"]
    report_results(lines, args.markdown, BEGIN, END, "Large images")


if __name__ == "__main__":
    main()
