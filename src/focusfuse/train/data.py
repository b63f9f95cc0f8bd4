"""Training pairs made on the fly from any folder of natural images.

Each sample: a sharp gray image (resized so its short side is 256, then a random 156x156 crop), a
focus mask (from a human segmentation when one is available, else random shapes; optionally thin
structures such as fences and wires painted into the scene), and two frames:
A in focus where the mask is 1, B in focus elsewhere. Defocus is either the paper's Gaussian blur
(blurred and sharp regions cut along the mask) or a layered disk-PSF model in which a defocused
foreground spreads over the background, as a real lens does. Augmentations from the paper: random
blur level, offset of B by up to 2 px, Gaussian noise, A/B swap, flips and 90-degree rotations.

Every sample is a pure function of (seed, epoch, index), so runs are reproducible with any number of
loader workers. Validation pairs are fixed (epoch -1) and come from images held out of training.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..io.images import list_images, read_image
from ..evaluation.synthetic import cut_layers, layered_pair, render
from ..ops.color import GRAY_WEIGHTS, dtype_scale


@dataclass(frozen=True)
class PairRecipe:
    """Knobs of the pair generator; defaults follow the paper where it says something."""

    resize: int = 256  # short side after resizing
    crop: int = 156
    max_offset: float = 2.0  # px, B shifted against A
    offset_fraction: float = 0.5  # share of samples with an offset (real pairs are often registered)
    max_noise: float = 0.02  # std of Gaussian noise on [0, 1] values
    gaussian_sigma: tuple[float, float] = (1.0, 4.0)  # paper-style Gaussian defocus
    disk_radius: tuple[float, float] = (1.0, 6.0)  # layered disk PSF defocus
    layered_fraction: float = 0.4  # share of samples using the layered disk model with two depths
    ramp_fraction: float = 0.2  # share using a continuous depth (a ramp with the mask's objects on it)
    segment_fraction: float = 0.7  # share of masks from segmentations (when available)
    max_gain: float = 0.0  # B's exposure relative to A's: 1 +- this (real pairs differ by up to ~6%)
    max_border: int = 0  # px: dark bands along the edges of one frame, as registration leaves them (0 = none)
    border_fraction: float = 0.3  # share of samples with such bands when max_border > 0
    thin_fraction: float = 0.0  # share of masks that are thin near structures (fences, wires, twigs)


def split_images(folder: str | os.PathLike, every: int = 10) -> tuple[list[Path], list[Path]]:
    """(training, validation) image paths: every ``every``-th image (natural order) is held out."""
    images = list_images(folder)
    validation = images[::every]
    held_out = set(validation)
    return [p for p in images if p not in held_out], validation


def read_segments(segments_dir: str | os.PathLike | None, image_path: str | os.PathLike) -> np.ndarray | None:
    """The human segmentation of an image (``NAME.png`` in ``segments_dir``, a label map); None without one."""
    if not segments_dir:
        return None
    path = Path(segments_dir) / f"{Path(image_path).stem}.png"
    return read_image(path) if path.is_file() else None


def _to_gray01(image: np.ndarray) -> np.ndarray:
    """An image as read -> float32 gray in [0, 1] (the fusion's gray weights)."""
    x = image.astype(np.float32) / dtype_scale(image.dtype)
    if x.ndim == 3:
        wr, wg, wb = GRAY_WEIGHTS
        x = x[:, :, 0] * wr + x[:, :, 1] * wg + x[:, :, 2] * wb
    return x


def _resize_short_side(x: np.ndarray, size: int, interpolation: int) -> np.ndarray:
    h, w = x.shape[:2]
    scale = size / min(h, w)
    return cv2.resize(x, (max(size, round(w * scale)), max(size, round(h * scale))), interpolation=interpolation)


def random_shapes_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A few random filled ellipses and polygons covering roughly 20-70% of the crop."""
    mask = np.zeros((h, w), np.uint8)
    for _ in range(rng.integers(1, 4)):
        if rng.random() < 0.5:
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            axes = (int(rng.integers(w // 8, w // 2)), int(rng.integers(h // 8, h // 2)))
            cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        else:
            n = int(rng.integers(3, 8))
            points = np.stack([rng.integers(0, w, n), rng.integers(0, h, n)], axis=1).astype(np.int32)
            cv2.fillPoly(mask, [cv2.convexHull(points)], 1)
    return mask.astype(np.float32)


def thin_structures_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Thin foreground: a fence lattice or a few curved strands (wires, twigs), 2-10 px wide."""
    mask = np.zeros((h, w), np.uint8)
    size = min(h, w)
    if rng.random() < 0.5:  # lattice: two families of parallel bars, 50-130 degrees apart
        width = int(rng.integers(2, 9))
        spacing = float(rng.uniform(3 * width + 12, 3 * width + 40))
        first = rng.uniform(0, np.pi)
        for angle in (first, first + rng.uniform(0.9, 2.3)):
            direction = np.array([np.cos(angle), np.sin(angle)])
            normal = np.array([-direction[1], direction[0]])
            for offset in np.arange(-size, size, spacing) + rng.uniform(0, spacing):
                centre = np.array([w / 2, h / 2]) + offset * normal
                p, q = centre - 2 * size * direction, centre + 2 * size * direction
                cv2.line(mask, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), 1, width)
    else:  # strands: smooth random walks, each about one crop long
        for _ in range(rng.integers(2, 6)):
            point = rng.uniform(0, [w, h])
            heading = rng.uniform(0, 2 * np.pi)
            points = [point]
            for _ in range(10):
                heading += rng.normal(0, 0.25)
                point = point + rng.uniform(0.05, 0.15) * size * np.array([np.cos(heading), np.sin(heading)])
                points.append(point)
            cv2.polylines(mask, [np.round(points).astype(np.int32)], False, 1, int(rng.integers(2, 11)))
    return mask.astype(np.float32)


def paint_structures(sharp: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``sharp`` with the mask painted in as an object of its own: a flat tone with a faint texture."""
    tone = np.float32(rng.uniform(0.0, 1.0))
    texture = np.rot90(sharp, int(rng.integers(1, 4)))  # the image's own grain, turned
    texture = cv2.resize(np.ascontiguousarray(texture), sharp.shape[::-1]) - float(sharp.mean())
    painted = tone + np.float32(rng.uniform(0.0, 0.4)) * texture
    soft = cv2.GaussianBlur(mask, (0, 0), 0.7)  # antialiased edges
    return (soft * painted + (1 - soft) * sharp).astype(np.float32)


def segment_mask(segments: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Foreground = a random subset of the labelled segments (at least one, not all)."""
    labels = np.unique(segments)
    if len(labels) < 2:
        return (segments == labels[0]).astype(np.float32)
    k = int(rng.integers(1, len(labels)))
    chosen = rng.choice(labels, size=k, replace=False)
    return np.isin(segments, chosen).astype(np.float32)


def segment_depth(segments: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A depth map (float32 in [0, 1)) giving each labelled segment its own random depth: objects at
    several depths with sharp depth edges along the human outlines."""
    labels, inverse = np.unique(segments, return_inverse=True)
    return rng.random(len(labels)).astype(np.float32)[inverse.reshape(segments.shape)]


def near_mask(segments: np.ndarray | None, shape: tuple[int, int], rng: np.random.Generator,
              tries: int = 20) -> np.ndarray:
    """A pair's near layer (float 0/1): a random subset of the labelled segments covering 5-95% of the image
    when it can (random shapes without segments)."""
    if segments is None:
        return random_shapes_mask(*shape, rng).astype(np.float32)
    near = segment_mask(segments, rng)
    for _ in range(tries):
        if 0.05 <= near.mean() <= 0.95:
            break
        near = segment_mask(segments, rng)
    return near


def sloped_segment_depth(segments: np.ndarray, rng: np.random.Generator, slope: float = 0.5) -> np.ndarray:
    """A depth map (float32 in [0, 1]) giving each labelled segment its own tilted plane (a random depth, and a
    random tilt of up to ``slope`` across the image): sharp depth edges along the outlines, as in
    :func:`segment_depth`, and continuous depth within each object, as real surfaces have."""
    labels, inverse = np.unique(segments, return_inverse=True)
    inverse = inverse.reshape(segments.shape)
    h, w = segments.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32) / max(h, w)
    offset = rng.random(len(labels)).astype(np.float32)
    tilt_x, tilt_y = (rng.uniform(-slope, slope, size=(2, len(labels)))).astype(np.float32)
    depth = offset[inverse] + tilt_x[inverse] * x + tilt_y[inverse] * y
    return ((depth - depth.min()) / max(float(np.ptp(depth)), 1e-6)).astype(np.float32)


def shapes_depth(h: int, w: int, rng: np.random.Generator, layers: int = 4) -> np.ndarray:
    """A depth map (float32 in [0, 1)) of random shapes at random depths over a background at its own."""
    depth = np.full((h, w), rng.random(), np.float32)
    for _ in range(layers):
        depth = np.where(random_shapes_mask(h, w, rng) > 0, np.float32(rng.random()), depth)
    return depth


def recipe_overrides(items: Sequence[str]) -> dict[str, object]:
    """``KEY=VALUE`` strings -> PairRecipe keyword arguments (``crop`` has its own option); ValueError if bad."""
    defaults = {f.name: f.default for f in fields(PairRecipe) if f.name != "crop"}
    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in defaults:
            raise ValueError(f"{item!r}: use KEY=VALUE with KEY one of {', '.join(defaults)}")
        default = defaults[key]
        try:
            if isinstance(default, tuple):
                parsed: object = tuple(float(v) for v in value.split(","))
                if len(parsed) != len(default):
                    raise ValueError
            else:
                parsed = type(default)(value)
        except ValueError:
            kind = "LOW,HIGH" if isinstance(default, tuple) else type(default).__name__
            raise ValueError(f"{item!r}: {key} takes {kind}") from None
        low, high = parsed if isinstance(parsed, tuple) else (parsed, parsed)
        if not 0 <= low <= high or (key.endswith("_fraction") and high > 1):
            raise ValueError(f"{item!r}: out of range (>= 0; LOW <= HIGH; fractions <= 1)")
        out[key] = parsed
    return out


def shift(x: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Sub-pixel translation with reflected borders (bicubic: linear interpolation would blur B)."""
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(x, m, (x.shape[1], x.shape[0]), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def ramp_pair(sharp: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
              recipe: PairRecipe) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A scene with continuous depth: a tilted plane, the mask's objects raised above it; A and B focus at
    two depths and each pixel belongs to the frame whose focus plane is nearer."""
    h, w = sharp.shape
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    plane = (np.cos(angle) * x + np.sin(angle) * y) / max(h, w)
    plane = (plane - plane.min()) / max(float(np.ptp(plane)), 1e-6)
    depth = 0.7 * plane + mask * rng.uniform(0.3, 0.8)
    focus_a, focus_b = np.sort(rng.uniform(0.0, float(depth.max()), size=2))[::-1]
    blur = rng.uniform(*recipe.disk_radius) / max(float(focus_a - focus_b), 0.15)
    layers = cut_layers(sharp, depth, 10)
    a, b = render(layers, float(focus_a), blur), render(layers, float(focus_b), blur)
    label = (np.abs(depth - focus_a) <= np.abs(depth - focus_b)).astype(np.float32)
    return a, b, label


def edge_bands(shape: tuple[int, int], max_width: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean bands of 1..max_width px along one or two random edges of an image of ``shape``."""
    band = np.zeros(shape, bool)
    for edge in rng.choice(4, size=int(rng.integers(1, 3)), replace=False):
        width = int(rng.integers(1, max_width + 1))
        rows_or_cols = slice(0, width) if edge % 2 == 0 else slice(-width, None)
        if edge < 2:
            band[rows_or_cols, :] = True
        else:
            band[:, rows_or_cols] = True
    return band


def make_pair(sharp: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
              recipe: PairRecipe) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A, B, mask): A in focus where mask = 1. ``sharp`` gray float32 in [0, 1]."""
    kind = rng.random()
    if kind < recipe.ramp_fraction:
        a, b, mask = ramp_pair(sharp, mask, rng, recipe)
    elif kind < recipe.ramp_fraction + recipe.layered_fraction:
        # mask = foreground (near, depth 1), rest far (depth 0); A focused near, B far
        r_far = rng.uniform(*recipe.disk_radius)
        r_near = rng.uniform(*recipe.disk_radius)
        a, b = layered_pair(sharp, mask, r_far, r_near)
    else:
        sigma_a, sigma_b = rng.uniform(*recipe.gaussian_sigma, size=2)
        a = mask * sharp + (1 - mask) * cv2.GaussianBlur(sharp, (0, 0), sigma_a)
        b = (1 - mask) * sharp + mask * cv2.GaussianBlur(sharp, (0, 0), sigma_b)
    if recipe.max_offset > 0 and rng.random() < recipe.offset_fraction:
        dx, dy = rng.uniform(-recipe.max_offset, recipe.max_offset, size=2)
        b = shift(b, dx, dy)
    if recipe.max_gain > 0:
        b = b * (1.0 + rng.uniform(-recipe.max_gain, recipe.max_gain))
    if recipe.max_noise > 0:
        noise = rng.uniform(0, recipe.max_noise)
        a = a + rng.normal(0, noise, a.shape).astype(np.float32)
        b = b + rng.normal(0, noise, b.shape).astype(np.float32)
    if recipe.max_border > 0 and rng.random() < recipe.border_fraction:
        # a registered frame's fill (dark, flat) must never be chosen: the label points to the other frame
        band = edge_bands(a.shape, recipe.max_border, rng)
        fill = np.float32(rng.uniform(0.0, 0.15))
        if rng.random() < 0.5:
            a, mask = np.where(band, fill, a), np.where(band, 0.0, mask)
        else:
            b, mask = np.where(band, fill, b), np.where(band, 1.0, mask)
    a, b = np.clip(a, 0, 1).astype(np.float32), np.clip(b, 0, 1).astype(np.float32)
    if rng.random() < 0.5:  # A/B swap
        a, b, mask = b, a, 1.0 - mask
    return a, b, mask.astype(np.float32)


def _flip_rotate(arrays: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    k = int(rng.integers(0, 4))
    flip = rng.random() < 0.5
    out = []
    for x in arrays:
        x = np.rot90(x, k)
        out.append(np.ascontiguousarray(x[:, ::-1] if flip else x))
    return out


class FocusPairs(Dataset):
    """Multi-focus training pairs: item -> (A, B, mask) tensors of shape (1, crop, crop)."""

    def __init__(self, images: Sequence[str | os.PathLike], segments_dir: str | os.PathLike | None = None, *,
                 samples_per_image: int = 1, seed: int = 0, recipe: PairRecipe = PairRecipe(),
                 fixed: bool = False) -> None:
        self.recipe = recipe
        self.seed = seed
        self.samples_per_image = samples_per_image
        self.fixed = fixed
        self.epoch = 0
        self.grays: list[np.ndarray] = []
        self.segments: list[np.ndarray | None] = []
        for path in images:
            path = Path(path)
            gray = _resize_short_side(_to_gray01(read_image(path)), recipe.resize, cv2.INTER_AREA)
            self.grays.append(gray)
            labels = read_segments(segments_dir, path)
            if labels is not None:
                seg = _resize_short_side(labels.astype(np.float32), recipe.resize, cv2.INTER_NEAREST)
                self.segments.append(seg.astype(np.int32))
            else:
                self.segments.append(None)
        if not self.grays:
            raise ValueError("no training images")

    def _mask(self, segments: np.ndarray | None, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
        """A focus mask covering 10-90% of the crop, and whether it is a thin structure to paint in.

        Thin structures (``recipe.thin_fraction``) are objects of their own; other masks come from the
        segments when available, else from random shapes.
        """
        c = self.recipe.crop
        for _ in range(8):
            # no draw at thin_fraction 0, so runs made before the knob existed still reproduce
            thin = self.recipe.thin_fraction > 0 and rng.random() < self.recipe.thin_fraction
            if thin:
                mask = thin_structures_mask(c, c, rng)
            elif segments is not None and rng.random() < self.recipe.segment_fraction:
                mask = segment_mask(segments, rng)
            else:
                mask = random_shapes_mask(c, c, rng)
            if 0.1 <= mask.mean() <= 0.9:
                return mask, thin
        return (np.arange(c)[None, :] < c // 2).repeat(c, 0).astype(np.float32), False  # half and half

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.grays) * self.samples_per_image

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        epoch = -1 if self.fixed else self.epoch
        rng = np.random.default_rng([self.seed, epoch + 1, index])
        i = index % len(self.grays)
        gray, segments = self.grays[i], self.segments[i]
        c = self.recipe.crop
        y = int(rng.integers(0, gray.shape[0] - c + 1))
        x = int(rng.integers(0, gray.shape[1] - c + 1))
        sharp = gray[y:y + c, x:x + c]
        mask, thin = self._mask(segments[y:y + c, x:x + c] if segments is not None else None, rng)
        if thin:
            sharp = paint_structures(sharp, mask, rng)
        a, b, mask = make_pair(sharp, mask, rng, self.recipe)
        a, b, mask = _flip_rotate([a, b, mask], rng)
        return tuple(torch.from_numpy(t)[None] for t in (a, b, mask))  # type: ignore[return-value]


def validation_pairs(images: str | os.PathLike, segments_dir: str | os.PathLike | None = None, *,
                     samples_per_image: int = 4, seed: int = 1, recipe: PairRecipe = PairRecipe(),
                     every: int = 10) -> FocusPairs:
    """The fixed held-out pairs of a training run with seed ``seed - 1``: every ``every``-th image."""
    return FocusPairs(split_images(images, every)[1], segments_dir, samples_per_image=samples_per_image, seed=seed,
                      recipe=recipe, fixed=True)


__all__ = ["PairRecipe", "read_segments", "FocusPairs", "split_images", "validation_pairs", "make_pair", "edge_bands",
           "random_shapes_mask", "thin_structures_mask", "paint_structures", "segment_mask", "recipe_overrides"]
