"""Neighbour steps: phase correlation, coarse-to-fine ECC, plausibility checks and exposure matching."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from .ecc import EccError, EccResult, EccTarget, ecc_target, find_warp
from .geometry import map_points, photometric_matrix, rescale_transform, resize_matrix, translation_matrix
from .reduce import Reduced, coarse_sigma

# Plausibility limits for one neighbour step (frame i against the previous aligned frame).
MIN_STEP_SCALE = 0.8
MAX_STEP_SCALE = 1.25
MAX_STEP_ROTATION_DEG = 10.0
MAX_STEP_SHIFT_FRACTION = 0.25
MAX_STEP_ANISOTROPY = 1.08  # ratio of the affine part's singular values (shear / uneven scaling)
MAX_STEP_PERSPECTIVE = 0.05  # largest change of the homogeneous w over the frame
MIN_ECC_CORRELATION = 0.7  # ECC correlation of the band-passed neighbours below this: no match
MIN_GAIN, MAX_GAIN = 0.5, 2.0  # plausible exposure ratio between neighbours

# ECC iteration limits: until an update moves no template corner by more than the tolerance (px of
# that image); OpenCV's criterion (correlation change) for OpenCV's ECC (homography).
COARSE_ITERATIONS, COARSE_TOLERANCE = 100, 0.02
STRIDE_ITERATIONS, STRIDE_TOLERANCE = 10, 0.01  # every other row and column first: a quarter of the work
FINE_ITERATIONS, FINE_TOLERANCE = 30, 0.003
HOPELESS_CORRELATION = MIN_ECC_CORRELATION - 0.1  # at the working resolution: refused anyway, stop iterating
EXPOSURE_BAND = 64  # rows of the anchor warped and summed at a time in exposure_match


@dataclass(frozen=True)
class Step:
    """One neighbour step: geometry (3x3, frame -> anchor, working resolution), exposure (2x2 on (value, 1)).

    ``reason`` is "" when the step passed every check, else why it failed (then geometry and
    exposure are identities).
    """

    geometry: np.ndarray
    photometric: np.ndarray
    reason: str = ""


def ecc_motion(mode: str) -> int:
    """The ECC motion model of a mode ("auto" uses affine)."""
    if mode == "translation":
        return cv2.MOTION_TRANSLATION
    if mode == "homography":
        return cv2.MOTION_HOMOGRAPHY
    return cv2.MOTION_AFFINE


def level_matrix(level: np.ndarray, full: np.ndarray) -> np.ndarray:
    """3x3 map from working-resolution coordinates to those of an area-downscaled pyramid level."""
    return resize_matrix(level.shape[1] / full.shape[1], level.shape[0] / full.shape[0])


def coarse_shift(anchor: Reduced, frame: Reduced) -> np.ndarray:
    """3x3 translation (working resolution) from ``frame`` to ``anchor`` by phase correlation at the coarsest level.

    Falls back to identity when the peak is weak or implausibly far. ECC refines the shift from
    there, so the coarsest level's precision is enough.
    """
    small_anchor, small_frame = anchor.levels[-1], frame.levels[-1]
    height, width = small_frame.shape
    window = cv2.createHanningWindow((width, height), cv2.CV_32F)
    # Copies: some OpenCV builds (seen in 5.0.0) apply the window to the inputs in place.
    (dx, dy), response = cv2.phaseCorrelate(small_anchor.copy(), small_frame.copy(), window)
    # phaseCorrelate gives t with frame(x) = anchor(x - t), so frame point x sits at x - t in anchor.
    too_far = abs(dx) > MAX_STEP_SHIFT_FRACTION * width or abs(dy) > MAX_STEP_SHIFT_FRACTION * height
    if not np.isfinite([dx, dy]).all() or too_far or response < 0.01:
        return np.eye(3)
    return rescale_transform(translation_matrix(-dx, -dy), level_matrix(small_frame, frame.detail))


def border_margin(shape: tuple[int, int]) -> int:
    """Pixels at the border whose band-pass values depend on the border handling (3 coarse sigmas)."""
    return min(math.ceil(3 * coarse_sigma(shape)), min(shape) // 8)


def inner(image: np.ndarray, margin: int) -> np.ndarray:
    """``image`` without a border of ``margin`` pixels (a view)."""
    height, width = image.shape
    return image[margin : height - margin, margin : width - margin]


def opencv_ecc(frame: np.ndarray, anchor: np.ndarray, warp: np.ndarray, motion: int, margin: int, fine: bool
               ) -> tuple[np.ndarray, float]:
    """One OpenCV ECC run (homography): ``warp`` (3x3, frame -> anchor) refined, and the final correlation."""
    template = np.ascontiguousarray(inner(frame, margin))
    anchor_mask = np.zeros(anchor.shape, np.uint8)
    inner(anchor_mask, margin)[:] = 255
    start = (warp @ translation_matrix(margin, margin)).astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30 if fine else 100, 1e-6 if fine else 1e-5)
    correlation, refined = cv2.findTransformECC(template, anchor, start, motion, criteria, anchor_mask, 1)
    result = refined.astype(np.float64) @ translation_matrix(-margin, -margin)
    return result / result[2, 2], float(correlation)


def fast_ecc(frame: np.ndarray, anchor: np.ndarray, warp: np.ndarray, motion: int, margin: int, **limits: float
             ) -> tuple[np.ndarray, float]:
    """ECC (translation/affine, :func:`find_warp`) of ``frame`` onto ``anchor`` from ``warp`` (3x3); raises EccError."""
    result = refine(inner(frame, margin), ecc_target(anchor, margin), warp, motion, margin, **limits)
    return result.warp, result.correlation


def refine(template: np.ndarray, target: EccTarget, warp: np.ndarray, motion: int, margin: int, **limits: object
           ) -> EccResult:
    """:func:`find_warp` on an inner template and target, with ``warp`` (3x3) between the whole images."""
    result = find_warp(template, target, (warp @ translation_matrix(margin, margin))[:2], motion, **limits)
    refined = np.vstack([result.warp, [0.0, 0.0, 1.0]]) @ translation_matrix(-margin, -margin)
    return replace(result, warp=refined)


def ecc_at_level(frame: np.ndarray, anchor: np.ndarray, warp: np.ndarray, motion: int, margin: int,
                 fine: bool) -> tuple[np.ndarray, float]:
    """One ECC run at a pyramid level (OpenCV's for homographies); raises EccError or cv2.error on failure.

    A border of ``margin`` px is left out of both images: band-passing makes it depend on where
    the frame edge cuts the scene, a fixed pattern that would pull the estimate towards identity.
    """
    if motion == cv2.MOTION_HOMOGRAPHY:
        return opencv_ecc(frame, anchor, warp, motion, margin, fine)
    return fast_ecc(frame, anchor, warp, motion, margin, max_iterations=COARSE_ITERATIONS, tolerance=COARSE_TOLERANCE)


def pyramid_ecc(frame: Reduced, anchor: Reduced, start: np.ndarray, motion: int, last: int
                ) -> tuple[np.ndarray, float]:
    """``start`` refined from the coarsest pyramid level down to level ``last``, and the last correlation.

    A failure at a level above ``last`` keeps the estimate so far; a failure at ``last`` raises.
    """
    margin = border_margin(frame.detail.shape)
    warp, correlation = start, 0.0
    for level in range(len(frame.levels) - 1, last - 1, -1):
        small = frame.levels[level]
        to_level = level_matrix(small, frame.detail)
        scale = max(to_level[0, 0], to_level[1, 1])
        try:
            refined, correlation = ecc_at_level(small, anchor.levels[level], to_level @ warp @ np.linalg.inv(to_level),
                                                motion, math.ceil(margin * scale), fine=level == 0)
        except (EccError, cv2.error):
            if level == last:
                raise
            continue
        warp = rescale_transform(refined, to_level)
    return warp, correlation


def ecc_coarse_to_fine(frame: Reduced, anchor: Reduced, start: np.ndarray, motion: int) -> tuple[np.ndarray, float]:
    """ECC from the coarsest pyramid level to the working resolution; raises EccError/cv2.error on failure.

    Affine and translation: the coarsest level (area-downscaled, for a wide capture range), then
    every other row and column of the working resolution, then a last iteration or two on all of
    it. The working resolution's optimum is OpenCV's (same iteration), reached with far fewer
    full-size iterations. Homography: OpenCV's ECC on every level, as before. A failure before the
    last stage keeps the estimate so far; only the last stage's failure counts.
    """
    if motion == cv2.MOTION_HOMOGRAPHY:
        return pyramid_ecc(frame, anchor, start, motion, 0)
    warp = start
    if len(frame.levels) > 1:
        try:
            warp, _ = pyramid_ecc(frame, anchor, start, motion, len(frame.levels) - 1)
        except (EccError, cv2.error):
            pass
    margin = border_margin(frame.detail.shape)
    template, target = inner(frame.detail, margin), ecc_target(anchor.detail, margin)
    hessian = None
    try:
        coarse = refine(template, target, warp, motion, margin, max_iterations=STRIDE_ITERATIONS,
                        tolerance=STRIDE_TOLERANCE, stride=2, reuse_hessian=True)
        warp, hessian = coarse.warp, 4.0 * coarse.hessian  # a quarter of the pixels: about a quarter of the sums
    except EccError:
        pass
    result = refine(template, target, warp, motion, margin, max_iterations=FINE_ITERATIONS, tolerance=FINE_TOLERANCE,
                    give_up_below=HOPELESS_CORRELATION, reuse_hessian=True, hessian=hessian)
    return result.warp, result.correlation


def implausibility(step: np.ndarray, shape: tuple[int, int]) -> str:
    """"" when a neighbour step (3x3, working resolution) is plausible, else a short reason."""
    if not np.isfinite(step).all():
        return "transform has NaN/inf"
    height, width = shape
    linear = step[:2, :2]
    determinant = float(np.linalg.det(linear))
    if determinant <= 0:
        return "transform flips the image"
    scale = math.sqrt(determinant)
    if not MIN_STEP_SCALE <= scale <= MAX_STEP_SCALE:
        return f"implausible scale {scale:.3f}"
    rotation = math.degrees(math.atan2(linear[1, 0] - linear[0, 1], linear[0, 0] + linear[1, 1]))
    if abs(rotation) > MAX_STEP_ROTATION_DEG:
        return f"implausible rotation {rotation:.1f} deg"
    singular = np.linalg.svd(linear, compute_uv=False)
    if singular[0] / singular[1] > MAX_STEP_ANISOTROPY:
        return f"implausible shear/stretch (axis ratio {singular[0] / singular[1]:.3f})"
    perspective = abs(step[2, 0]) * width + abs(step[2, 1]) * height
    if perspective > MAX_STEP_PERSPECTIVE:
        return f"implausible perspective ({perspective:.3f})"
    centre = np.array([[(width - 1) / 2.0, (height - 1) / 2.0]])
    shift = map_points(step, centre)[0] - centre[0]
    if abs(shift[0]) > MAX_STEP_SHIFT_FRACTION * width or abs(shift[1]) > MAX_STEP_SHIFT_FRACTION * height:
        return f"implausible shift ({shift[0]:.1f}, {shift[1]:.1f}) px"
    return ""


def unclipped(image: np.ndarray, mask: np.ndarray, low: float = 0.02, high: float = 0.98) -> None:
    """Clear ``mask`` (bool, in place) where ``image`` is nearly black or white (<= low or >= high)."""
    within = np.greater(image, low)
    mask &= within
    np.less(image, high, out=within)
    mask &= within


def source_maps(inverse: np.ndarray, rows: slice, width: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 (x, y) maps: where the pixels of ``rows`` (all ``width`` columns) land under ``inverse`` (3x3)."""
    x = np.arange(width, dtype=np.float64)[None, :]
    y = np.arange(rows.start, rows.stop, dtype=np.float64)[:, None]
    if np.array_equal(inverse[2], [0.0, 0.0, 1.0]):
        return tuple(np.add((row[0] * x).astype(np.float32), (row[1] * y + row[2]).astype(np.float32))
                     for row in inverse[:2])  # type: ignore[return-value]
    w = inverse[2, 0] * x + inverse[2, 1] * y + inverse[2, 2]
    return tuple(((row[0] * x + row[1] * y + row[2]) / w).astype(np.float32)
                 for row in inverse[:2])  # type: ignore[return-value]


def exposure_match(anchor_smooth: np.ndarray, frame_smooth: np.ndarray, step: np.ndarray) -> tuple[float, float]:
    """Gain and offset with ``anchor ~ gain * frame + offset``, from heavily blurred images over the overlap.

    Defocus moves contrast between nearby pixels but hardly changes local means, so heavily blurred
    images of neighbours differ mainly by the exposure change. Where the blurred images still carry
    clear structure (correlation >= 0.9, visible spread) gain and offset come from their means and
    standard deviations (a symmetric fit, not biased like least squares); otherwise only a gain is
    fitted, from the means. Nearly black or white pixels (clipping) and pixels within 1/32 of the
    long side of either frame's border are left out. The frame is warped and the sums accumulated
    (in float64) a band of rows at a time, with cv2.remap: the same floats in any thread.
    """
    height, width = anchor_smooth.shape
    margin = max(2, round(max(height, width) / 32))
    inside = np.zeros((height, width), np.uint8)
    inner(inside, margin)[:] = 1
    inverse = np.linalg.inv(step)
    sums = np.zeros(6)  # pixels, anchor, frame, anchor^2, frame^2, anchor * frame
    for start in range(0, height, EXPOSURE_BAND):
        rows = slice(start, min(height, start + EXPOSURE_BAND))
        map_x, map_y = source_maps(inverse, rows, width)
        warped = cv2.remap(frame_smooth, map_x, map_y, cv2.INTER_LINEAR)
        mask = cv2.remap(inside, map_x, map_y, cv2.INTER_NEAREST).view(bool)
        mask &= inside[rows].view(bool)
        unclipped(anchor_smooth[rows], mask)
        unclipped(warped, mask)
        anchor, frame = anchor_smooth[rows][mask], warped[mask]
        sums += [anchor.size, anchor.sum(dtype=np.float64), frame.sum(dtype=np.float64),
                 np.einsum("i,i->", anchor, anchor, dtype=np.float64), np.einsum("i,i->", frame, frame, dtype=np.float64),
                 np.einsum("i,i->", anchor, frame, dtype=np.float64)]
    return gain_and_offset(sums, height * width)


def gain_and_offset(sums: np.ndarray, size: int) -> tuple[float, float]:
    """:func:`exposure_match`'s fit from the overlap's sums (pixels, a, f, a^2, f^2, a*f)."""
    count = sums[0]
    if count < 0.01 * size:
        return 1.0, 0.0
    anchor_mean, frame_mean = sums[1] / count, sums[2] / count
    anchor_std = math.sqrt(max(sums[3] / count - anchor_mean**2, 0.0))
    frame_std = math.sqrt(max(sums[4] / count - frame_mean**2, 0.0))
    if anchor_std > 0.01 and frame_std > 0.01:
        correlation = (sums[5] / count - anchor_mean * frame_mean) / (anchor_std * frame_std)
        if correlation >= 0.9:
            gain = anchor_std / frame_std
            return float(gain), float(anchor_mean - gain * frame_mean)
    return float(anchor_mean / max(frame_mean, 1e-6)), 0.0


def neighbour_step(anchor: Reduced, frame: Reduced, motion: int) -> Step:
    """The step from ``frame`` to ``anchor`` (geometry, exposure), or why there is none."""
    identity = np.eye(3)
    starts = [coarse_shift(anchor, frame)]
    if not np.allclose(starts[0], identity):
        starts.append(identity)  # second chance when the phase correlation peak misled ECC
    reason = ""
    for start in starts:
        try:
            step, correlation = ecc_coarse_to_fine(frame, anchor, start, motion)
        except (EccError, cv2.error):
            reason = reason or "ECC did not converge"
            continue
        reason = implausibility(step, frame.detail.shape)
        if not reason and correlation < MIN_ECC_CORRELATION:
            reason = f"no match (ECC correlation {correlation:.2f})"
        if not reason:
            break
    if reason:
        return Step(identity, np.eye(2), reason)
    gain, offset = exposure_match(anchor.smooth, frame.smooth, step)
    if not (np.isfinite([gain, offset]).all() and MIN_GAIN <= gain <= MAX_GAIN):
        return Step(identity, np.eye(2), f"implausible exposure change (gain {gain:.2f})")
    return Step(step, photometric_matrix(gain, offset))
