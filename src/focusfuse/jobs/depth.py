"""Depth maps: which frame each pixel came from, as raw indices, a height map, and a colour preview.

The index map of a stack fusion is a depth map in frame units: frame k was focused at z = k * z_step
(natural file order). ``height_map`` turns it into physical units; ``z_spacing`` reads the step from
ImageJ or OME-TIFF metadata when the stack is a multi-page TIFF.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import tifffile
from scipy import ndimage

from ..engine.options import check_int
from ..errors import UsageError
from ..io.images import TIFF_SUFFIXES
from ..io.metadata import tiff_physical_size


MAX_DEPTH_SMOOTH = 32  # a (2r+1)^2 median is slow beyond this, and wipes out structure anyway


def checked_index_map(index_map: object) -> np.ndarray:
    """``index_map`` if it is a non-empty HxW numpy array of real numbers; UsageError otherwise."""
    if not isinstance(index_map, np.ndarray) or index_map.ndim != 2 or index_map.size == 0 \
            or index_map.dtype.kind not in "uif":
        shape = getattr(index_map, "shape", None)
        raise UsageError(f"an index map is a non-empty HxW numpy array of frame numbers, not "
                         f"{type(index_map).__name__}" + (f" of shape {tuple(shape)}" if shape is not None else ""))
    return index_map


def checked_z_step(z_step: object) -> float:
    """``z_step`` as a float if it is a finite, non-zero number; UsageError otherwise."""
    if isinstance(z_step, bool) or not isinstance(z_step, (int, float, np.integer, np.floating)) \
            or not np.isfinite(z_step) or z_step == 0:
        raise UsageError(f"focus step {z_step!r}: the step between frames must be a non-zero number",
                         option="z_step")
    return float(z_step)


def smooth_index_map(index_map: np.ndarray, radius: int) -> np.ndarray:
    """Median filter of the index map over a (2r+1)^2 window (removes isolated speckle); r=0: unchanged."""
    index_map = checked_index_map(index_map)
    radius = check_int(radius, "depth smoothing radius", 0, MAX_DEPTH_SMOOTH, option="depth_smooth")
    if radius == 0:
        return index_map
    return ndimage.median_filter(index_map, size=2 * radius + 1, mode="nearest").astype(index_map.dtype)


def height_map(index_map: np.ndarray, z_step: float) -> np.ndarray:
    """Float32 height of each pixel in physical units: frame index times the focus step."""
    return checked_index_map(index_map).astype(np.float32) * np.float32(checked_z_step(z_step))


def colorize_index_map(index_map: np.ndarray, n_frames: int) -> np.ndarray:
    """RGB uint8 preview of an index map (turbo colour map, frame 0 blue .. last frame red)."""
    scale = 255.0 / max(n_frames - 1, 1)
    levels = np.clip(np.round(index_map.astype(np.float32) * scale), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(cv2.applyColorMap(levels, cv2.COLORMAP_TURBO)[:, :, ::-1])


def depth_preview(index_map: np.ndarray, n_frames: int, z_step: float | None = None, unit: str = "") -> np.ndarray:
    """Colourised index map with a labelled colour bar on the right (RGB uint8)."""
    index_map = checked_index_map(index_map)
    n_frames = check_int(n_frames, "number of frames", 1, option="n_frames")
    if index_map.min() < 0 or index_map.max() > n_frames - 1:
        raise UsageError(f"the index map holds frame numbers from {index_map.min()} to {index_map.max()}, outside "
                         f"0..{n_frames - 1} for {n_frames} frames", option="n_frames")
    if z_step is not None:
        z_step = checked_z_step(z_step)
    image = colorize_index_map(index_map, n_frames)
    h = image.shape[0]
    bar_w, label_w = max(12, h // 40), 110
    levels = np.linspace(n_frames - 1, 0, h)[:, None].repeat(bar_w, axis=1)
    bar = colorize_index_map(levels, n_frames)
    panel = np.full((h, bar_w + label_w, 3), 255, np.uint8)
    panel[:, :bar_w] = bar
    font_scale = max(0.35, min(1.0, h / 900))
    ticks = np.unique(np.linspace(0, n_frames - 1, min(n_frames, 6)).round().astype(int))
    for k in ticks:
        y = int(round((n_frames - 1 - k) / max(n_frames - 1, 1) * (h - 1)))
        text = f"{k * z_step:.4g} {unit}".strip() if z_step else f"frame {k}"
        (_, text_h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        y_text = min(max(y + text_h // 2, text_h + 2), h - 4)
        cv2.line(panel, (bar_w, y), (bar_w + 6, y), (0, 0, 0), 1)
        cv2.putText(panel, text, (bar_w + 8, y_text), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    gap = np.full((h, 8, 3), 255, np.uint8)
    return np.ascontiguousarray(np.hstack([image, gap, panel]))


def z_spacing(path: str | os.PathLike) -> tuple[float, str] | None:
    """Z step of a TIFF stack and its unit ('µm', 'nm', ...; '' when none is named): ImageJ 'spacing'
    (in the description's 'unit', or 'zunit') or OME PhysicalSizeZ (PhysicalSizeZUnit, default µm)."""
    try:
        with tifffile.TiffFile(path) as tif:
            size = tiff_physical_size(tif)
    except Exception:  # noqa: BLE001 - no readable calibration: the caller asks for --z-step
        return None
    return (size.z, size.z_unit or "") if size.z else None


def z_spacing_of_inputs(paths: list[Path]) -> tuple[float, str] | None:
    """Z spacing when the stack is a single TIFF file with it in its metadata."""
    unique = {p for p in paths}
    if len(unique) == 1:
        path = next(iter(unique))
        if path.suffix.lower() in TIFF_SUFFIXES:
            return z_spacing(path)
    return None
