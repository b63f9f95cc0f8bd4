"""Depth / index maps: which frame each pixel came from, as data and as a colour preview."""

from __future__ import annotations

import cv2
import numpy as np


def colorize_index_map(index_map: np.ndarray, n_frames: int) -> np.ndarray:
    """RGB uint8 preview of an index map (turbo colour map, frame 0 blue .. last frame red)."""
    scale = 255.0 / max(n_frames - 1, 1)
    levels = np.clip(np.round(index_map.astype(np.float32) * scale), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(cv2.applyColorMap(levels, cv2.COLORMAP_TURBO)[:, :, ::-1])
