"""Edge fill: constant bands along a frame's edges that hold no image, and how fusion keeps them out.

Frames registered by other tools (or cropped by a camera) often carry bands of a constant value,
usually black, along one or more edges. Such a band does two kinds of damage. Its step into the image is
a hard edge, which reads as "in focus", so the frame wins a strip of pixels next to it. And where the
band itself wins, the fill is copied into the fused image. So, per frame:

- the band is found as whole rows/columns at an edge whose values are all equal to the outermost line's
  value, within one level (registration tools write one exact value; camera noise, even on a dark
  background, spreads wider), and at most ``MAX_FILL_FRACTION`` of the frame per side;
- the network sees the band replaced by the nearest image row/column (as our own alignment does
  with its borders), so the step is gone; the focus measure is zero there;
- the decision never takes the band where the other frame has pixels; where every frame is fill the
  blend of the frames' own (fill) values is kept.

Bands are looked for in the frames as they are fused: after alignment and ``--crop``. A sub-pixel warp
turns the band's last line into a mix of fill and image, which is no longer fill; that line's step stays.
A background clipped to one exact value along a whole edge (a dark field saved in 8 bit) also counts as
fill: where another frame has a blurred glow there, the glow is taken; ``edge_fill=False`` keeps it out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..ops.color import dtype_scale
from ..box import Box

MAX_FILL_FRACTION = 1 / 8  # a band covers at most this share of the frame's height or width
STRIP = 32  # lines read first when the bands are looked for region by region (then twice as many, ...)
MAX_STRIP_VALUES = 1 << 22  # but no more values than this in one read

ReadBox = Callable[[Box], np.ndarray]


@dataclass(frozen=True)
class EdgeFill:
    """Widths in pixels of the fill bands along a frame's four edges (0: none)."""

    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0

    def __bool__(self) -> bool:
        return any((self.top, self.bottom, self.left, self.right))

    def image_area(self, shape: tuple[int, int]) -> Box:
        """The frame's pixels that are not fill."""
        return Box(self.top, shape[0] - self.bottom, self.left, shape[1] - self.right)


def _as_lines(pixels: np.ndarray, axis: int) -> np.ndarray:
    """(n_lines, length, channels) float64 with lines taken along ``axis`` (0: rows, 1: columns)."""
    x = pixels.astype(np.float64, copy=False)
    x = x[..., None] if x.ndim == 2 else x
    return x if axis == 0 else x.transpose(1, 0, 2)


def _fill_lines(lines: np.ndarray, reference: np.ndarray, tolerance: float) -> int:
    """How many leading ``lines`` are constant and at the ``reference`` value, each within ``tolerance``."""
    spread = lines.max(axis=1) - lines.min(axis=1)
    offset = np.abs(lines.mean(axis=1) - reference)
    is_fill = ((spread <= tolerance) & (offset <= tolerance)).all(axis=1)
    return int(is_fill.size if is_fill.all() else np.argmin(is_fill))


def _band_width(read_lines: Callable[[int, int], np.ndarray], limit: int, length: int, tolerance: float) -> int:
    """Width of the fill band at one edge; ``read_lines(i, j)`` gives lines i..j-1 counted from the edge,
    each ``length`` pixels long. Reads grow (32 lines, 64, ...) up to ``MAX_STRIP_VALUES`` each."""
    width, reference, count = 0, None, STRIP
    while width < limit:
        lines = read_lines(width, min(limit, width + count))
        if reference is None:
            reference = lines[0].mean(axis=0)
        found = _fill_lines(lines, reference, tolerance)
        width += found
        if found < len(lines):
            break
        count = max(STRIP, min(2 * count, MAX_STRIP_VALUES // max(length, 1)))
    return width


def fill_tolerance(dtype: np.dtype) -> float:
    """How far a fill line's values may stray from one value: one level (1/65535 of the scale for float)."""
    return 1.0 if np.dtype(dtype).kind in "ui" else dtype_scale(np.dtype(dtype)) / 65535.0


def find_edge_fill(read: ReadBox, shape: tuple[int, int], dtype: np.dtype) -> EdgeFill:
    """The fill bands of a frame of ``shape`` whose pixels ``read(box)`` returns, reading only its edges.

    The first rows tell whether the outermost columns can be fill at all, so an ordinary frame costs
    two row reads and no column read (a column read may decode a whole striped TIFF)."""
    h, w = shape
    tol = fill_tolerance(dtype)
    limit_h, limit_w = int(h * MAX_FILL_FRACTION), int(w * MAX_FILL_FRACTION)
    first_rows = _as_lines(read(Box(0, min(h, STRIP), 0, w)), 0)

    def top_lines(i: int, j: int) -> np.ndarray:  # the first strip is read once, for rows and columns
        return first_rows[i:j] if j <= len(first_rows) else _as_lines(read(Box(i, j, 0, w)), 0)

    top = _band_width(top_lines, limit_h, w, tol)
    bottom = _band_width(lambda i, j: _as_lines(read(Box(h - j, h - i, 0, w)), 0)[::-1], limit_h, w, tol)

    def may_be_fill(column: int) -> bool:
        values = first_rows[:, column]
        return bool((values.max(axis=0) - values.min(axis=0) <= tol).all())

    left = right = 0
    if may_be_fill(0):
        left = _band_width(lambda i, j: _as_lines(read(Box(0, h, i, j)), 1), limit_w, h, tol)
    if may_be_fill(w - 1):
        right = _band_width(lambda i, j: _as_lines(read(Box(0, h, w - j, w - i)), 1)[::-1], limit_w, h, tol)
    return EdgeFill(top, bottom, left, right)


def edge_fill(image: np.ndarray) -> EdgeFill:
    """The fill bands of a whole frame given as an array (HxW or HxWxC)."""
    return find_edge_fill(lambda box: image[box.slices], image.shape[:2], image.dtype)


def area_in(area: Box, box: Box) -> Box:
    """``area`` (frame coordinates) relative to ``box``: may start before 0 or end beyond the box."""
    return Box(area.y0 - box.y0, area.y1 - box.y0, area.x0 - box.x0, area.x1 - box.x0)


def nearest_image_indices(box: Box, area: Box) -> tuple[np.ndarray, np.ndarray]:
    """Frame rows and columns whose pixels stand in for each of ``box``'s: clamped into ``area``."""
    rows = np.clip(np.arange(box.y0, box.y1), area.y0, area.y1 - 1)
    cols = np.clip(np.arange(box.x0, box.x1), area.x0, area.x1 - 1)
    return rows, cols


def replace_fill(read: ReadBox, box: Box, pixels: np.ndarray, area: Box) -> np.ndarray:
    """``pixels`` (the frame in ``box``) with the fill outside ``area`` replaced by the nearest image pixels.

    The nearest pixels lie in ``box`` unless the box misses the image area along an axis; only then is
    the frame read again (``read``), so a tile gives exactly what the whole frame gives there.
    """
    rows, cols = nearest_image_indices(box, area)
    source = Box(int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
    if box.contains(source):
        return pixels[np.ix_(rows - box.y0, cols - box.x0)]
    return read(source)[np.ix_(rows - source.y0, cols - source.x0)]


def image_mask(area: Box, shape: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, 1, H, W) bool: True inside ``area`` (given relative to an array of ``shape``)."""
    mask = torch.zeros((1, 1) + tuple(shape), dtype=torch.bool, device=device)
    mask[..., max(area.y0, 0):max(area.y1, 0), max(area.x0, 0):max(area.x1, 0)] = True
    return mask


@dataclass
class FrameFill:
    """A frame region with edge fill: what the network sees, and where the frame has image pixels."""

    network: torch.Tensor  # (C, h, w) in [0, 1], the fill replaced by the nearest image pixels
    has_image: torch.Tensor  # (1, 1, h, w) bool


def prefer_image(p: torch.Tensor, has_image_a: torch.Tensor | None, has_image_b: torch.Tensor | None) -> torch.Tensor:
    """Decision map ``p`` (1 = A) set to 1 where only A has image pixels and to 0 where only B has."""
    if has_image_a is None and has_image_b is None:
        return p
    a = torch.ones_like(p, dtype=torch.bool) if has_image_a is None else has_image_a
    b = torch.ones_like(p, dtype=torch.bool) if has_image_b is None else has_image_b
    return torch.where(a & ~b, torch.ones_like(p), torch.where(b & ~a, torch.zeros_like(p), p))


def either_has_image(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    """Where a blend of two frames has image pixels (None: everywhere)."""
    return None if a is None or b is None else a | b


__all__ = ["EdgeFill", "FrameFill", "edge_fill", "find_edge_fill", "replace_fill", "image_mask", "prefer_image",
           "either_has_image", "area_in", "fill_tolerance", "MAX_FILL_FRACTION"]
