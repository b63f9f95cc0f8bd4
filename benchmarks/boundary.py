"""Focus boundaries: how close fused stacks and pairs come to the truth at and away from depth edges.

Scenes are rendered from the held-out BSDS300 images (every 10th, never used for training) with the
layered disk-PSF model of :mod:`focusfuse.evaluation.synthetic`, in which a defocused foreground spreads over
the background behind it:

- ``stacks``: every human-labelled segment is a depth layer at a random depth; N focus planes span the
  depth range (blur radius up to ``--max-blur`` px).
- ``pairs``: a random subset of the segments is the near layer, the rest the far one; frame A focuses
  near, B far; each layer's blur radius in the other frame is drawn from ``--pair-blur``.
- ``demo``: the ``focusfuse demo`` stack (continuous depth from a real disparity map).

``--compositing slab`` renders every set with the layer model used before 2026-12-05's seventh session (seams
at every layer edge; see :mod:`focusfuse.evaluation.synthetic`), to reproduce the figures measured with it.

Scores (8-bit, against the sharp original): PSNR over all channels and pixels, SSIM on gray, MSE (and its
PSNR) in the band of ``--band`` px around true depth boundaries and away from it, index-map accuracy
(all pixels, band). Ceilings on the same frames: ``true index`` takes every pixel from the frame focused
nearest its true depth; ``oracle 7x7`` takes every pixel from the frame closest to the truth over the 7x7
window around it; ``oracle pixel`` from the frame closest to the truth at that pixel.

    python benchmarks/boundary.py --json docs/boundary.json --markdown /tmp/boundary.md
    python benchmarks/boundary.py --variant calibrated --variant "serial:strategy=serial"
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

from focusfuse import fuse_stack
from focusfuse.evaluation.metrics import ssim, to_gray_matlab
from focusfuse.evaluation.synthetic import COMPOSITING, layered_pair, make_stack
from focusfuse.io.images import read_image

from shared_data import SHARED  # noqa: E402

BSDS = SHARED / "data" / "train" / "bsds300"
ORACLE_WINDOW = 7


@dataclass
class Scene:
    """8-bit frames, the 8-bit truth, the ideal index map and the band around true depth edges."""

    name: str
    frames: list[np.ndarray]
    truth: np.ndarray
    index_truth: np.ndarray
    band: np.ndarray


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def boundary_band(depth: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` px of a depth discontinuity (a jump between 4-neighbours)."""
    edge = np.zeros(depth.shape, bool)
    dy = depth[1:] != depth[:-1]
    dx = depth[:, 1:] != depth[:, :-1]
    edge[1:] |= dy
    edge[:-1] |= dy
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    if not edge.any():
        return edge
    return ndimage.distance_transform_edt(~edge) <= width


def demo_boundary_band(depth: np.ndarray, width: int, jump: float) -> np.ndarray:
    """Continuous depth: edges are jumps of more than ``jump`` (of the depth range) between neighbours."""
    span = max(float(np.ptp(depth)), 1e-6)
    step_y = np.abs(np.diff(depth, axis=0)) > jump * span
    step_x = np.abs(np.diff(depth, axis=1)) > jump * span
    edge = np.zeros(depth.shape, bool)
    edge[1:] |= step_y
    edge[:-1] |= step_y
    edge[:, 1:] |= step_x
    edge[:, :-1] |= step_x
    return ndimage.distance_transform_edt(~edge) <= width if edge.any() else edge


def stack_scenes(count: int, frames: int, max_blur: float, band: int, seed: int,
                 compositing: str = "extended") -> list[Scene]:
    from focusfuse.train.data import segment_depth, split_images

    _, validation = split_images(BSDS / "images")
    rng = np.random.default_rng(seed)
    scenes = []
    for path in validation[:count]:
        image = read_image(path)
        depth = segment_depth(read_image(BSDS / "segments" / (path.stem + ".png")), rng)
        stack = make_stack(image, depth, frames, max_blur=max_blur, compositing=compositing)
        scenes.append(Scene(path.stem, [to_uint8(f) for f in stack.frames], to_uint8(stack.truth),
                            stack.index_truth.astype(np.int64), boundary_band(stack.depth, band)))
    return scenes


def pair_scenes(count: int, blur: tuple[float, float], band: int, seed: int,
                compositing: str = "extended") -> list[Scene]:
    from focusfuse.train.data import near_mask, split_images

    _, validation = split_images(BSDS / "images")
    rng = np.random.default_rng(seed + 1)
    scenes = []
    for k in range(count):
        path = validation[k % len(validation)]
        image = read_image(path).astype(np.float32) / 255.0
        segments = read_image(BSDS / "segments" / (path.stem + ".png"))
        near = near_mask(segments, segments.shape[:2], rng)  # a boundary worth scoring
        r_far, r_near = rng.uniform(*blur, size=2)
        a, b = layered_pair(image, near, float(r_far), float(r_near), compositing)  # A: near in focus, B: far
        index = (near < 0.5).astype(np.int64)  # 0: A (near), 1: B (far)
        scenes.append(Scene(f"{path.stem}-{k}", [to_uint8(a), to_uint8(b)], to_uint8(image), index,
                            boundary_band(near, band)))
    return scenes


def demo_scene(band: int, compositing: str = "extended") -> Scene:
    from focusfuse.jobs.demo import demo_stack

    stack = demo_stack(compositing=compositing)
    return Scene("motorcycle", [to_uint8(f) for f in stack.frames], to_uint8(stack.truth),
                 stack.index_truth.astype(np.int64), demo_boundary_band(stack.depth, band, 0.05))


def compose(frames: list[np.ndarray], index: np.ndarray) -> np.ndarray:
    stack = np.stack(frames)
    return np.take_along_axis(stack, index[None, :, :, None], axis=0)[0]


def oracle_index(frames: list[np.ndarray], truth: np.ndarray, window: int) -> np.ndarray:
    """Per pixel, the frame whose squared error over the ``window`` x ``window`` neighbourhood is least."""
    errors = []
    for frame in frames:
        e = ((frame.astype(np.float32) - truth.astype(np.float32)) ** 2).sum(axis=2)
        errors.append(e if window == 1 else cv2.boxFilter(e, -1, (window, window), borderType=cv2.BORDER_REFLECT))
    return np.argmin(np.stack(errors), axis=0)


def mse(x: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    d = (x.astype(np.float64) - truth.astype(np.float64)) ** 2
    return float(d.mean() if mask is None else d[mask].mean())


def to_psnr(m: float) -> float:
    return float("inf") if m == 0 else 10 * np.log10(255.0 ** 2 / m)


def score(fused: np.ndarray, index: np.ndarray | None, scene: Scene) -> dict[str, float]:
    band = scene.band
    row = {"mse": mse(fused, scene.truth), "mse_band": mse(fused, scene.truth, band),
           "mse_away": mse(fused, scene.truth, ~band),
           "ssim": ssim(to_gray_matlab(fused.astype(np.float64)), to_gray_matlab(scene.truth.astype(np.float64)))}
    if index is not None:
        row["index_acc"] = float(np.mean(index == scene.index_truth))
        row["index_acc_band"] = float(np.mean(index[band] == scene.index_truth[band]))
    return row


def summary(rows: list[dict[str, float]]) -> dict[str, float]:
    """Means over scenes. PSNR and SSIM: means of the per-scene values (as the issue's tables); in and away from
    the band, PSNR of the mean MSE (away from boundaries a pair's frames can be exact: a per-scene PSNR is inf)."""
    out = {"psnr": float(np.mean([to_psnr(r["mse"]) for r in rows])),
           "mse_band": float(np.mean([r["mse_band"] for r in rows])),
           "mse_away": float(np.mean([r["mse_away"] for r in rows])),
           "ssim": float(np.mean([r["ssim"] for r in rows]))}
    out["psnr_band"], out["psnr_away"] = to_psnr(out["mse_band"]), to_psnr(out["mse_away"])
    for key in ("index_acc", "index_acc_band", "seconds"):
        if key in rows[0]:
            out[key] = float(np.mean([r[key] for r in rows]))
    return out


def parse_variant(text: str) -> tuple[str, dict[str, object]]:
    """``NAME[:key=value,...]`` -> (name, fuse_stack keyword arguments); values are int, float or text."""
    name, _, rest = text.partition(":")
    kwargs: dict[str, object] = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        for kind in (int, float):
            try:
                kwargs[key] = kind(value)
                break
            except ValueError:
                continue
        else:
            kwargs[key] = value
    return name, kwargs


def fuse_with(model, kwargs: dict[str, object]) -> Callable[[list[np.ndarray]], tuple[np.ndarray, np.ndarray | None]]:
    def run(frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        weights = model if kwargs.get("method", "gacn") == "gacn" else None  # others: their own (or none)
        result = fuse_stack(frames, weights=weights, device="cpu", **{"align": "none", **kwargs})
        return result.fused, None if result.index_map is None else result.index_map.astype(np.int64)
    return run


def evaluate(sets: dict[str, list[Scene]], variants: dict[str, Callable], verbose: bool) -> dict[str, dict]:
    results: dict[str, dict] = {}
    for set_name, scenes in sets.items():
        rows: dict[str, list[dict[str, float]]] = {}
        for scene in scenes:
            for name, window in (("true index", None), ("oracle 7x7", ORACLE_WINDOW), ("oracle pixel", 1)):
                index = scene.index_truth if window is None else oracle_index(scene.frames, scene.truth, window)
                rows.setdefault(name, []).append(score(compose(scene.frames, index), index, scene))
            for name, fuse in variants.items():
                start = time.perf_counter()
                fused, index = fuse(scene.frames)
                row = score(fused, index, scene)
                row["seconds"] = time.perf_counter() - start
                rows.setdefault(name, []).append(row)
            if verbose:
                print(f"{set_name} {scene.name}: " + "  ".join(
                    f"{name} {to_psnr(rows[name][-1]['mse']):.2f}" for name in variants), flush=True)
        results[set_name] = {name: summary(r) for name, r in rows.items()}
    return results


def markdown(results: dict[str, dict], baseline: str | None) -> str:
    lines = []
    for set_name, table in results.items():
        lines += [f"**{set_name}**", "",
                  "| method | PSNR | SSIM | PSNR band | band MSE | PSNR away | index acc. | index acc. band | s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, r in table.items():
            change = ""
            if baseline and name != baseline and baseline in table and "seconds" in r:
                change = f" ({100 * (r['mse_band'] / table[baseline]['mse_band'] - 1):+.0f}%)"
            acc = (f"{100 * r['index_acc']:.1f}% | {100 * r['index_acc_band']:.1f}%" if "index_acc" in r
                   else " | ")
            secs = f"{r['seconds']:.2f}" if "seconds" in r else ""
            lines.append(f"| {name} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['psnr_band']:.2f} | "
                         f"{r['mse_band']:.1f}{change} | {r['psnr_away']:.2f} | {acc} | {secs} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None)
    parser.add_argument("--sets", default="stacks,pairs,demo")
    parser.add_argument("--stacks", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--max-blur", type=float, default=8.0)
    parser.add_argument("--pair-blur", type=float, nargs=2, default=(2.0, 8.0))
    parser.add_argument("--band", type=int, default=6)
    parser.add_argument("--compositing", choices=COMPOSITING, default="extended", help="the layer model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", action="append", default=None,
                        help="NAME[:key=value,...] of fuse_stack (repeatable; default: the default settings)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()

    from focusfuse.methods.gacn.weights import load_model

    if not (BSDS / "images").is_dir():
        raise SystemExit(f"needs the BSDS300 images in {BSDS} (set FOCUSFUSE_SHARED)")
    model = load_model(args.weights, "cpu")
    variants = dict(parse_variant(v) for v in args.variant or ["default"])
    fusers = {name: fuse_with(model, kwargs) for name, kwargs in variants.items()}
    wanted = args.sets.split(",")
    sets = {}
    if "stacks" in wanted:
        sets["stacks"] = stack_scenes(args.stacks, args.frames, args.max_blur, args.band, args.seed, args.compositing)
    if "pairs" in wanted:
        sets["pairs"] = pair_scenes(args.pairs, tuple(args.pair_blur), args.band, args.seed, args.compositing)
    if "demo" in wanted:
        sets["demo"] = [demo_scene(args.band, args.compositing)]
    results = evaluate(sets, fusers, args.verbose)
    table = markdown(results, next(iter(fusers)))
    print(table)
    if args.markdown:
        args.markdown.write_text(table)
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k not in ("json", "markdown", "verbose")}
        args.json.write_text(json.dumps({"settings": settings, "variants": variants, "results": results},
                                        indent=1, default=str))


if __name__ == "__main__":
    main()
