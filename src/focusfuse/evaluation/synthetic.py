"""Synthetic focus stacks with known ground truth, from a sharp image and a depth map.

Layered defocus model: the depth map is cut into layers; each layer is blurred with a disk PSF whose
radius grows with its distance from the focus plane, and layers are composited back to front, so a
defocused foreground spreads over the background behind it (as real lenses do). Depth is taken in
units where blur is linear in depth (disparity / inverse distance), as in a thin lens.

Each layer goes on, in the colour of its nearest own pixel, behind the nearer layers at its edges, as far as
blur can reveal it: a surface of continuous depth, cut into layers, renders without seams, and behind a blurred
near edge the background shows its own colours, not the layers farther back. ``compositing="slab"`` renders as
before 2026-12-05 (each layer covers only its own slab; at every layer edge the half-covered pixels let
the layers behind show through, which draws dark seams across a continuous slope and rims at occlusions).
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


COMPOSITING = ("extended", "slab")


@dataclass
class Layers:
    """An image cut into depth layers, what every frame focused anywhere is rendered from: per present layer
    (far to near) its pixels, mean depth and, for ``extended`` compositing, the distance to it and its colours
    extended beyond it (computed once for all the frames of a stack)."""

    image: np.ndarray
    label: np.ndarray
    lo: float
    hi: float
    compositing: str
    parts: list[tuple[int, np.ndarray, float, np.ndarray | None, np.ndarray | None]]


def cut_layers(image: np.ndarray, depth: np.ndarray, layers: int = 12, compositing: str = "extended") -> Layers:
    """``image`` (HxW or HxWxC float in [0,1]) cut into ``layers`` layers of ``depth`` (see :func:`layered_defocus`)."""
    if compositing not in COMPOSITING:
        raise ValueError(f"compositing must be one of {COMPOSITING}, got {compositing!r}")
    image = image.astype(np.float32)
    lo, hi = float(depth.min()), float(depth.max())
    edges = np.linspace(lo, hi + 1e-6, layers + 1)
    label = np.clip(np.digitize(depth, edges) - 1, 0, layers - 1)
    parts = []
    for layer in range(layers):  # far (small depth) to near
        own = label == layer
        if not own.any():
            continue
        distance = colours = None
        if compositing == "extended" and not own.all():  # the nearest own pixel of every other one
            distance, (iy, ix) = ndimage.distance_transform_edt(~own, return_indices=True)
            colours = image[iy, ix]
        parts.append((layer, own, float(depth[own].mean()), distance, colours))
    return Layers(image, label, lo, hi, compositing, parts)


def render(layers: Layers, focus: float, blur_per_unit: float) -> np.ndarray:
    """The frame of cut ``layers`` focused at depth ``focus`` (see :func:`layered_defocus`)."""
    image, label = layers.image, layers.label
    widest = blur_per_unit * max(abs(layers.lo - focus), abs(layers.hi - focus))  # the largest blur radius here
    out = None
    for layer, own, centre, distance, colours in layers.parts:
        radius = blur_per_unit * abs(centre - focus)
        mask = own
        if distance is not None:  # the layer goes on behind the nearer layers at its edge, as far as blur reveals
            mask = own | ((label > layer) & (distance <= int(np.ceil(radius + widest)) + 1))
        mask = mask.astype(np.float32)
        colours = image if colours is None else colours
        alpha = disk_blur(mask, radius)
        weighted = disk_blur(colours * (mask if image.ndim == 2 else mask[:, :, None]), radius)
        a = alpha if image.ndim == 2 else alpha[:, :, None]
        colour = weighted / np.maximum(a, 1e-6)
        if out is None:
            out = _fill_holes(colour, alpha)
        else:
            out = a * colour + (1.0 - a) * out
    return np.clip(out, 0.0, 1.0)


def layered_defocus(image: np.ndarray, depth: np.ndarray, focus: float, blur_per_unit: float,
                    layers: int = 12, compositing: str = "extended") -> np.ndarray:
    """Render ``image`` (HxW or HxWxC float in [0,1]) focused at depth ``focus``.

    Larger depth = nearer to the camera (as disparity). Blur radius = blur_per_unit * |depth - focus|.
    ``compositing``: ``"extended"`` (default) or ``"slab"`` (the earlier model; see the module's docstring).
    Several frames of one scene: :func:`cut_layers` once, then :func:`render` each.
    """
    return render(cut_layers(image, depth, layers, compositing), focus, blur_per_unit)


def layered_pair(image: np.ndarray, near: np.ndarray, blur_far: float, blur_near: float,
                 compositing: str = "extended") -> tuple[np.ndarray, np.ndarray]:
    """(focused near, focused far): ``image`` with the ``near`` mask (1: near) in front of the rest, one frame
    focused on each layer; ``blur_far`` / ``blur_near``: the other layer's disk radius (px) in each."""
    layers = cut_layers(image, near, 2, compositing)
    return render(layers, 1.0, blur_far), render(layers, 0.0, blur_near)


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
               layers: int = 12, compositing: str = "extended") -> SyntheticStack:
    """A focus bracket of ``n_frames`` with focus planes spread evenly over the depth range.

    ``max_blur`` is the disk radius (px) of the nearest layer when the farthest is in focus; ``compositing``
    as in :func:`layered_defocus`.
    """
    if np.issubdtype(image.dtype, np.integer):
        image = image.astype(np.float32) / np.iinfo(image.dtype).max
    depth = fill_invalid(depth)
    lo, hi = np.percentile(depth, [2, 98])
    depth = np.clip(depth, lo, hi).astype(np.float32)
    span = max(float(hi - lo), 1e-6)
    focus = np.linspace(lo, hi, n_frames).astype(np.float32)
    blur_per_unit = max_blur / span
    cut = cut_layers(image, depth, layers, compositing)
    frames = [render(cut, float(f), blur_per_unit) for f in focus]
    index_truth = np.abs(depth[None] - focus[:, None, None]).argmin(axis=0).astype(np.uint16)
    return SyntheticStack(frames, image.astype(np.float32), depth, focus, index_truth)
