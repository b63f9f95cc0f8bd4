"""Applying an alignment: a frame resampled onto the reference grid with its exposure matched, and cropping."""

from __future__ import annotations

import cv2
import numpy as np

from ..ops.color import dtype_scale
from .model import FrameAlignment

REMAP_STEPS = 32  # OpenCV interpolates on a 1/32-pixel grid (INTER_TAB_SIZE)
REMAP_BAND = 256  # rows of coordinate maps computed at a time


def source_coordinates(transform: np.ndarray, origin: tuple[int, int], shape: tuple[int, int]
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Where the output pixels ``origin + (0..h, 0..w)`` of the reference grid lie in the source frame.

    Computed in float64 from global positions and snapped to OpenCV's 1/32-pixel interpolation grid,
    so a pixel gets the same source position, and the same interpolation weights, whatever region
    it is warped in.
    """
    inverse = np.linalg.inv(np.asarray(transform, np.float64))
    ys, xs = np.mgrid[origin[0]:origin[0] + shape[0], origin[1]:origin[1] + shape[1]].astype(np.float64)
    x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    w = inverse[2, 0] * xs + inverse[2, 1] * ys + inverse[2, 2]
    return np.round(x / w * REMAP_STEPS) / REMAP_STEPS, np.round(y / w * REMAP_STEPS) / REMAP_STEPS


def warp_frame(
    image: np.ndarray,
    alignment: FrameAlignment,
    shape: tuple[int, int],
    *,
    interpolation: int = cv2.INTER_CUBIC,
    origin: tuple[int, int] = (0, 0),
    offset: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """The frame resampled onto the reference frame's pixel grid, with its exposure matched.

    ``image`` holds the source frame's pixels from ``offset`` (y, x) on (the whole frame by default);
    the result covers ``shape`` pixels of the reference grid from ``origin`` (y, x) on. Every region
    warps to exactly the pixels the whole-frame warp gives there (see :func:`source_coordinates`), as
    long as ``image`` covers the source area the region maps onto (plus 2 pixels for bicubic).

    Keeps the dtype and channel layout: uint8/uint16 are rounded and clipped, float stays float
    (cubic overshoot is not clipped). Bicubic by default: linear interpolation at a half-pixel shift
    averages neighbouring pixels, a blur that depends on each frame's sub-pixel shift and so biases
    the focus measure the fusion relies on. Borders are replicated, not black: a constant fill would
    put a hard artificial edge (strong "focus") into every shifted frame, whereas replicated pixels
    carry no gradient across the border; ``StackAlignment.valid_box`` gives the region to keep.
    An identity alignment of the whole frame returns ``image`` itself.
    """
    image = np.asarray(image)
    transform = np.asarray(alignment.transform, dtype=np.float64)
    same_grid = image.shape[:2] == tuple(shape) and tuple(origin) == tuple(offset)
    same_place = np.allclose(transform, np.eye(3), atol=1e-9) and same_grid
    same_exposure = abs(alignment.gain - 1.0) < 1e-9 and abs(alignment.offset) < 1e-9
    if same_place and same_exposure:
        return image
    if same_exposure:  # OpenCV resamples uint8/uint16 with rounding and saturation itself
        return resample(image, transform, shape, origin, offset, interpolation)
    scale = dtype_scale(image.dtype)
    work_type = np.float64 if image.dtype == np.float64 else np.float32
    pixels = image.astype(work_type) * work_type(alignment.gain) + work_type(alignment.offset * scale)
    if not same_place:
        pixels = resample(pixels, transform, shape, origin, offset, interpolation)
    if image.dtype.kind == "f":
        return pixels.astype(image.dtype, copy=False)
    return np.clip(np.rint(pixels), 0, scale).astype(image.dtype)


def keep_layout(warped: np.ndarray, image: np.ndarray) -> np.ndarray:
    """OpenCV drops a single channel axis (HxWx1 -> HxW); put it back."""
    return warped[:, :, None] if image.ndim == 3 and warped.ndim == 2 else warped


def resample(pixels: np.ndarray, transform: np.ndarray, shape: tuple[int, int], origin: tuple[int, int],
             offset: tuple[int, int], interpolation: int) -> np.ndarray:
    """``pixels`` (the source from ``offset``) warped by ``transform`` onto ``shape`` pixels from ``origin``."""
    out = np.empty(tuple(shape) + pixels.shape[2:], dtype=pixels.dtype)
    for y0 in range(0, shape[0], REMAP_BAND):
        rows = min(REMAP_BAND, shape[0] - y0)
        x, y = source_coordinates(transform, (origin[0] + y0, origin[1]), (rows, shape[1]))
        map_x = (x - offset[1]).astype(np.float32)  # exact: multiples of 1/32 well inside float32's range
        map_y = (y - offset[0]).astype(np.float32)
        band = cv2.remap(pixels, map_x, map_y, interpolation, borderMode=cv2.BORDER_REPLICATE)
        out[y0:y0 + rows] = keep_layout(band, pixels)
    return out


def crop_to_box(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The (x0, y0, x1, y1) region of ``image`` (x1/y1 exclusive), as a view."""
    x0, y0, x1, y1 = box
    height, width = image.shape[:2]
    if not (0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height):
        raise ValueError(f"box {box} does not fit a {width}x{height} image")
    return image[y0:y1, x0:x1]

