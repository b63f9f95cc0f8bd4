"""``focusfuse demo``: a real fusion on a focus stack with known truth, made offline.

The scene is scikit-image's bundled Middlebury "motorcycle" image with its disparity map (a real depth
map); :mod:`focusfuse.evaluation.synthetic` renders a focus bracket from it, which is fused and scored against
the all-in-focus original.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..evaluation.synthetic import SyntheticStack, make_stack

MIN_DEMO_FRAMES, MAX_DEMO_FRAMES = 2, 64
MIN_DEMO_SCALE, MAX_DEMO_SCALE = 0.1, 1.0  # the scene's size relative to the 741x500 original

def motorcycle_scene(scale: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 image, disparity float32) from scikit-image's data folder, resized by ``scale``."""
    import skimage

    folder = Path(skimage.__file__).resolve().parent / "data"
    image = cv2.imread(str(folder / "motorcycle_left.png"), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"scikit-image's motorcycle_left.png is missing from {folder}")
    image = image[:, :, ::-1]
    with np.load(folder / "motorcycle_disp.npz") as data:
        disparity = data[data.files[0]].astype(np.float32)
    if scale != 1.0:
        size = (max(8, round(image.shape[1] * scale)), max(8, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        finite = np.isfinite(disparity)
        filled = np.where(finite, disparity, 0.0).astype(np.float32)
        weight = cv2.resize(finite.astype(np.float32), size, interpolation=cv2.INTER_AREA)
        disparity = cv2.resize(filled, size, interpolation=cv2.INTER_AREA) / np.maximum(weight, 1e-6)
        disparity[weight < 0.5] = np.inf
    return np.ascontiguousarray(image), disparity


def demo_stack(n_frames: int = 6, scale: float = 0.5, max_blur: float = 5.0,
               compositing: str = "extended") -> SyntheticStack:
    """The motorcycle rendered as a focus bracket (``compositing``: see :func:`make_stack`)."""
    image, disparity = motorcycle_scene(scale)
    return make_stack(image, disparity, n_frames, max_blur=max_blur * scale * 2, compositing=compositing)


@dataclass
class DemoReport:
    frames: int
    size: tuple[int, int]
    psnr_fused: float
    psnr_best_frame: float
    index_accuracy: float
    seconds: float
    out_dir: Path | None
    fusion: str = ""  # how it was fused, e.g. "calibrated, learned boundary blend"


def psnr(x: np.ndarray, truth: np.ndarray) -> float:
    """PSNR (dB) of float images in [0, 1]."""
    mse = float(np.mean((x.astype(np.float64) - truth.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def write_demo_files(out_dir: str | os.PathLike, stack: SyntheticStack, fused: np.ndarray,
                     index_map: np.ndarray) -> Path:
    from .depth import colorize_index_map
    from ..io.images import check_output_folder, write_image

    out = check_output_folder(out_dir, create=True)
    frames = check_output_folder(out / "frames", create=True)
    names = [f"frame_{i + 1:02d}.png" for i in range(len(stack.frames))]
    for stale in frames.glob("frame_*.png"):  # left by an earlier demo with more frames
        if stale.name not in names:
            stale.unlink()
    for name, frame in zip(names, stack.frames):
        write_image(frames / name, to_uint8(frame))
    write_image(out / "truth.png", to_uint8(stack.truth))
    write_image(out / "fused.png", fused)
    write_image(out / "index_map.png", colorize_index_map(index_map, len(stack.frames)))
    return out


def run_demo(*, weights=None, device: str = "auto", n_frames: int = 6, scale: float = 0.5, method: str = "gacn",
             strategy: str | None = None, out_dir: str | os.PathLike | None = None,
             progress=None, boundary_blend: str | bool | None = None) -> DemoReport:
    """Render the demo stack, fuse it with ``method`` (``weights`` and ``strategy``: gacn's and sesf's;
    ``boundary_blend``: gacn's, default learned; see ``fuse_stack``), and score the result against the truth."""
    import time

    from ..backends.select import select_backend
    from ..engine.fuse import run_stack_fusion, stack_result
    from ..engine.options import FusionOptions, check_int
    from ..errors import UsageError
    from ..io.images import check_output_folder
    from ..methods.gacn.boundary_blend import MIN_FRAMES, blend_label
    from ..methods.registry import load_method_weights

    options = FusionOptions(method=method, strategy=strategy, boundary_blend=boundary_blend)
    n_frames = check_int(n_frames, "number of frames", MIN_DEMO_FRAMES, MAX_DEMO_FRAMES, option="n_frames")
    if not (isinstance(scale, (int, float)) and not isinstance(scale, bool)
            and MIN_DEMO_SCALE <= scale <= MAX_DEMO_SCALE):
        raise UsageError(f"scale {scale!r}: use a number from {MIN_DEMO_SCALE} to {MAX_DEMO_SCALE} (the scene's size "
                         "relative to the 741x500 original)", option="scale")
    backend = select_backend(device)
    model = load_method_weights(options.method, weights, backend.device)
    if out_dir is not None:
        check_output_folder(out_dir, create=True)  # before the work, not after
    stack = demo_stack(n_frames, scale)
    frames = [to_uint8(f) for f in stack.frames]
    start = time.perf_counter()
    result = stack_result(run_stack_fusion(frames, options, weights=model, device=backend, progress=progress), options)
    seconds = time.perf_counter() - start
    truth = to_uint8(stack.truth).astype(np.float32) / 255.0
    fused = result.fused.astype(np.float32) / 255.0
    best_frame = max(psnr(f.astype(np.float32) / 255.0, truth) for f in frames)
    accuracy = float(np.mean(result.index_map == stack.index_truth))
    written = write_demo_files(out_dir, stack, result.fused, result.index_map) if out_dir else None
    blended = options.boundary_blend != "off" and len(frames) >= MIN_FRAMES
    fusion = (options.strategy if method == "gacn" else method) + (f", {blend_label(options.boundary_blend)}"
                                                                   if blended else "")
    return DemoReport(len(frames), (truth.shape[1], truth.shape[0]), psnr(fused, truth), best_frame,
                      accuracy, seconds, written, fusion)
