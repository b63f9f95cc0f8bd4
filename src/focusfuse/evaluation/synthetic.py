"""Synthetic focus stacks with known ground truth, from a sharp image and a depth map.

Layered defocus model: the depth map is cut into layers; each layer is blurred with a disk PSF whose
radius grows with its distance from the focus plane, and layers are composited back to front, so a
defocused foreground spreads over the background behind it (as real lenses do). Depth is taken in
units where blur is linear in depth (disparity / inverse distance), as in a thin lens.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage


def disk_kernel(radius: float) -> np.ndarray:
    """Normalised disk PSF with anti-aliased rim; radius < 0.5 gives the identity."""
    if radius < 0.5:
        return np.ones((1, 1), np.float32)
    half = int(np.ceil(radius + 0.5))
    y, x = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    k = np.clip(radius + 0.5 - np.sqrt(x * x + y * y), 0.0, 1.0)
    return (k / k.sum()).astype(np.float32)


def disk_blur(image: np.ndarray, radius: float) -> np.ndarray:
    """Blur with a disk PSF (reflecting border)."""
    if radius < 0.5:
        return image.astype(np.float32, copy=True)
    return cv2.filter2D(image.astype(np.float32), -1, disk_kernel(radius), borderType=cv2.BORDER_REFLECT)


def fill_invalid(depth: np.ndarray) -> np.ndarray:
    """Replace non-finite depth values by their nearest finite neighbour."""
    invalid = ~np.isfinite(depth)
    if not invalid.any():
        return depth.astype(np.float32)
    _, (iy, ix) = ndimage.distance_transform_edt(invalid, return_indices=True)
    return depth[iy, ix].astype(np.float32)


def layered_defocus(image: np.ndarray, depth: np.ndarray, focus: float, blur_per_unit: float,
                    layers: int = 12) -> np.ndarray:
    """Render ``image`` (HxW or HxWxC float in [0,1]) focused at depth ``focus``.

    Larger depth = nearer to the camera (as disparity). Blur radius = blur_per_unit * |depth - focus|.
    """
    image = image.astype(np.float32)
    lo, hi = float(depth.min()), float(depth.max())
    edges = np.linspace(lo, hi + 1e-6, layers + 1)
    label = np.clip(np.digitize(depth, edges) - 1, 0, layers - 1)
    out = None
    for layer in range(layers):  # far (small depth) to near
        mask = (label == layer).astype(np.float32)
        if not mask.any():
            continue
        centre = float(depth[label == layer].mean())
        radius = blur_per_unit * abs(centre - focus)
        alpha = disk_blur(mask, radius)
        weighted = disk_blur(image * (mask if image.ndim == 2 else mask[:, :, None]), radius)
        a = alpha if image.ndim == 2 else alpha[:, :, None]
        colour = weighted / np.maximum(a, 1e-6)
        if out is None:
            out = _fill_holes(colour, alpha)
        else:
            out = a * colour + (1.0 - a) * out
    return np.clip(out, 0.0, 1.0)


def _fill_holes(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Colour of the farthest layer extended into pixels it does not cover (nearest covered pixel)."""
    holes = alpha < 1e-3
    if not holes.any():
        return colour
    _, (iy, ix) = ndimage.distance_transform_edt(holes, return_indices=True)
    return colour[iy, ix]


@dataclass
class SyntheticStack:
    """Frames (float32 [0,1]), the all-in-focus truth, the depth map and the ideal index map."""

    frames: list[np.ndarray]
    truth: np.ndarray
    depth: np.ndarray
    focus: np.ndarray
    index_truth: np.ndarray


def make_stack(image: np.ndarray, depth: np.ndarray, n_frames: int, max_blur: float = 6.0,
               layers: int = 12) -> SyntheticStack:
    """A focus bracket of ``n_frames`` with focus planes spread evenly over the depth range.

    ``max_blur`` is the disk radius (px) of the nearest layer when the farthest is in focus.
    """
    if np.issubdtype(image.dtype, np.integer):
        image = image.astype(np.float32) / np.iinfo(image.dtype).max
    depth = fill_invalid(depth)
    lo, hi = np.percentile(depth, [2, 98])
    depth = np.clip(depth, lo, hi).astype(np.float32)
    span = max(float(hi - lo), 1e-6)
    focus = np.linspace(lo, hi, n_frames).astype(np.float32)
    blur_per_unit = max_blur / span
    frames = [layered_defocus(image, depth, float(f), blur_per_unit, layers) for f in focus]
    index_truth = np.abs(depth[None] - focus[:, None, None]).argmin(axis=0).astype(np.uint16)
    return SyntheticStack(frames, image.astype(np.float32), depth, focus, index_truth)
