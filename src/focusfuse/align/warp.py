"""Applying an alignment: a frame resampled onto the reference grid with its exposure matched, and cropping."""

from __future__ import annotations

import cv2
import numpy as np

from ..ops.color import dtype_scale
from .model import FrameAlignment

REMAP_STEPS = 32  # OpenCV interpolates on a 1/32-pixel grid (INTER_TAB_SIZE)
REMAP_BAND = 64  # output rows resampled at a time: a band's coordinate maps stay in the CPU cache


def source_coordinates(transform: np.ndarray, origin: tuple[int, int], shape: tuple[int, int]
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Where the output pixels ``origin + (0..h, 0..w)`` of the reference grid lie in the source frame.

    Computed in float64 from global positions and snapped to OpenCV's 1/32-pixel interpolation grid,
    so a pixel gets the same source position, and the same interpolation weights, whatever region
    it is warped in. Affine transforms take sums of a per-column and a per-row term (the very same
    float64 operations as the general formula, whose w is exactly 1 there).
    """
    inverse = np.linalg.inv(np.asarray(transform, np.float64))
    if np.array_equal(inverse[2], [0.0, 0.0, 1.0]):
        return tuple(affine_coordinate(row, origin, shape) for row in inverse[:2])  # type: ignore[return-value]
    ys, xs = np.mgrid[origin[0]:origin[0] + shape[0], origin[1]:origin[1] + shape[1]].astype(np.float64)
    x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    w = inverse[2, 0] * xs + inverse[2, 1] * ys + inverse[2, 2]
    return np.round(x / w * REMAP_STEPS) / REMAP_STEPS, np.round(y / w * REMAP_STEPS) / REMAP_STEPS


def affine_coordinate(row: np.ndarray, origin: tuple[int, int], shape: tuple[int, int], scaled: bool = False
                      ) -> np.ndarray:
    """One source coordinate (``row`` . (x, y, 1)) of the output pixels, snapped to 1/32 px, as float64.

    Scaling by REMAP_STEPS (a power of two) is exact, so ``(a*x + b*y) + c`` scaled term by term
    rounds exactly like the unscaled sum scaled afterwards. ``scaled``: in 1/32 px (whole numbers).
    """
    steps = row * REMAP_STEPS
    columns = steps[0] * np.arange(origin[1], origin[1] + shape[1], dtype=np.float64)
    rows = steps[1] * np.arange(origin[0], origin[0] + shape[0], dtype=np.float64)
    coordinate = np.add(columns[None, :], rows[:, None])
    coordinate += steps[2]
    np.rint(coordinate, out=coordinate)
    if not scaled:
        coordinate *= 1.0 / REMAP_STEPS
    return coordinate


def remap_coordinates(transform: np.ndarray, origin: tuple[int, int], shape: tuple[int, int],
                      offset: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """float32 maps for cv2.remap into a source image that starts at ``offset`` (y, x); exact (1/32 px steps)."""
    inverse = np.linalg.inv(np.asarray(transform, np.float64))
    if np.array_equal(inverse[2], [0.0, 0.0, 1.0]):
        return affine_map(inverse[0], origin, shape, offset[1]), affine_map(inverse[1], origin, shape, offset[0])
    x, y = source_coordinates(transform, origin, shape)
    map_x = np.subtract(x, offset[1], out=x).astype(np.float32)
    map_y = np.subtract(y, offset[0], out=y).astype(np.float32)
    return map_x, map_y


def affine_map(row: np.ndarray, origin: tuple[int, int], shape: tuple[int, int], shift: int) -> np.ndarray:
    """:func:`affine_coordinate` minus ``shift``, as a float32 remap map (exact: multiples of 1/32 px)."""
    coordinate = affine_coordinate(row, origin, shape, scaled=True)
    if shift:
        coordinate -= shift * REMAP_STEPS
    return np.multiply(coordinate, 1.0 / REMAP_STEPS, out=np.empty(shape, np.float32), casting="same_kind")


def source_rows(map_y: np.ndarray, height: int) -> slice:
    """The source rows bicubic samples at ``map_y`` read (floor(y) - 1 .. floor(y) + 2), within 0..height."""
    low, high = cv2.minMaxLoc(map_y)[:2]
    first = min(max(int(np.floor(low)) - 1, 0), height - 1)
    return slice(first, min(max(int(np.floor(high)) + 3, first + 1), height))


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
    An identity alignment of the whole frame returns ``image`` itself. Exposure is applied in float
    (float32 for 8/16-bit frames) before resampling.
    """
    image = np.asarray(image)
    transform = np.asarray(alignment.transform, dtype=np.float64)
    same_grid = image.shape[:2] == tuple(shape) and tuple(origin) == tuple(offset)
    same_place = np.allclose(transform, np.eye(3), atol=1e-9) and same_grid
    same_exposure = abs(alignment.gain - 1.0) < 1e-9 and abs(alignment.offset) < 1e-9
    if same_place and same_exposure:
        return image
    exposure = None if same_exposure else (alignment.gain, alignment.offset)
    if same_place:  # exposure only
        return rounded_to(matched_exposure(image, *exposure), image.dtype)  # type: ignore[misc]
    return resample(image, transform, shape, origin, offset, interpolation, exposure)


def matched_exposure(image: np.ndarray, gain: float, offset: float) -> np.ndarray:
    """``gain * image + offset`` (offset on the 0..1 scale) in float32, or float64 for float64 frames."""
    work_type = np.float64 if image.dtype == np.float64 else np.float32
    pixels = np.multiply(image, work_type(gain), dtype=work_type)
    pixels += work_type(offset * dtype_scale(image.dtype))
    return pixels


def rounded_to(pixels: np.ndarray, dtype: np.dtype, out: np.ndarray | None = None) -> np.ndarray:
    """Float pixels as ``dtype`` (into ``out`` if given): floats as they are, integers rounded (half to even)
    and clipped; ``pixels`` is overwritten."""
    dtype = np.dtype(dtype)
    if dtype == np.uint8 and pixels.dtype == np.float32:
        np.maximum(pixels, 0.0, out=pixels)  # convertScaleAbs rounds half to even and saturates, after abs()
        if out is not None:
            return cv2.convertScaleAbs(pixels, dst=out)
        return cv2.convertScaleAbs(pixels).reshape(pixels.shape)
    if dtype.kind != "f":
        np.rint(pixels, out=pixels)
        np.clip(pixels, 0, dtype_scale(dtype), out=pixels)
    if out is None:
        return pixels.astype(dtype, copy=False)
    out[...] = pixels
    return out


def resample(image: np.ndarray, transform: np.ndarray, shape: tuple[int, int], origin: tuple[int, int],
             offset: tuple[int, int], interpolation: int, exposure: tuple[float, float] | None = None) -> np.ndarray:
    """``image`` (the source from ``offset``) warped by ``transform`` onto ``shape`` pixels from ``origin``.

    Works a band of REMAP_BAND output rows at a time; with ``exposure`` (gain, offset), only the
    source rows a band reads are converted to float and matched, and each band is rounded back to
    the image's type right away, so no full-size float copy is made.
    """
    planar = image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image  # OpenCV drops the axis
    out = np.empty(tuple(shape) + planar.shape[2:], dtype=image.dtype)
    for y0 in range(0, shape[0], REMAP_BAND):
        rows = min(REMAP_BAND, shape[0] - y0)
        map_x, map_y = remap_coordinates(transform, (origin[0] + y0, origin[1]), (rows, shape[1]), offset)
        if exposure is None:
            cv2.remap(planar, map_x, map_y, interpolation, dst=out[y0:y0 + rows], borderMode=cv2.BORDER_REPLICATE)
            continue
        needed = source_rows(map_y, planar.shape[0])
        map_y -= needed.start  # exact: whole pixels off multiples of 1/32
        source = matched_exposure(planar[needed], *exposure)
        band = cv2.remap(source, map_x, map_y, interpolation, borderMode=cv2.BORDER_REPLICATE)
        rounded_to(band, image.dtype, out[y0:y0 + rows])
    return out.reshape(tuple(shape) + image.shape[2:])


def crop_to_box(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The (x0, y0, x1, y1) region of ``image`` (x1/y1 exclusive), as a view."""
    x0, y0, x1, y1 = box
    height, width = image.shape[:2]
    if not (0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height):
        raise ValueError(f"box {box} does not fit a {width}x{height} image")
    return image[y0:y1, x0:x1]

