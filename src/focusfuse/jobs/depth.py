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

from ..io.images import TIFF_SUFFIXES
from ..io.metadata import tiff_physical_size


MAX_DEPTH_SMOOTH = 32  # a (2r+1)^2 median is slow beyond this, and wipes out structure anyway


def smooth_index_map(index_map: np.ndarray, radius: int) -> np.ndarray:
    """Median filter of the index map over a (2r+1)^2 window (removes isolated speckle); r=0: unchanged."""
    if radius <= 0:
        return index_map
    return ndimage.median_filter(index_map, size=2 * radius + 1, mode="nearest").astype(index_map.dtype)


def height_map(index_map: np.ndarray, z_step: float) -> np.ndarray:
    """Float32 height of each pixel in physical units: frame index times the focus step."""
    return index_map.astype(np.float32) * np.float32(z_step)


def colorize_index_map(index_map: np.ndarray, n_frames: int) -> np.ndarray:
    """RGB uint8 preview of an index map (turbo colour map, frame 0 blue .. last frame red)."""
    scale = 255.0 / max(n_frames - 1, 1)
    levels = np.clip(np.round(index_map.astype(np.float32) * scale), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(cv2.applyColorMap(levels, cv2.COLORMAP_TURBO)[:, :, ::-1])


def depth_preview(index_map: np.ndarray, n_frames: int, z_step: float | None = None, unit: str = "") -> np.ndarray:
    """Colourised index map with a labelled colour bar on the right (RGB uint8)."""
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
