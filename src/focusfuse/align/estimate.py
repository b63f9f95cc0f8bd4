"""Aligning a focus bracket: geometry (lens breathing, shifts, rotation) and exposure drift.

Estimation is one streaming pass (:func:`estimate_alignment`): each frame is reduced to a small gray
image, compared with its neighbour (the previous frame that aligned), and only 3x3 transforms and
gain/offset pairs are kept. Neighbours differ little in focus, so they look alike even when the two
ends of the bracket do not; the neighbour steps are then chained (composed) to the reference frame.
A frame whose neighbour step fails (e.g. one out of focus order) is read again afterwards and
aligned to the frame of most similar focus, found by a small per-frame focus signature.

The fusion pass reads each frame again and calls :func:`warp_frame` with that frame's
:class:`FrameAlignment`; :meth:`StackAlignment.valid_box` and :func:`crop_to_box` cut away the
border that is not covered by every frame.

Coordinates are pixel centres: pixel (x, y) is at column x, row y; transforms are 3x3 float64
matrices acting on (x, y, 1) at full resolution.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence, Sized
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from ..ops.color import GRAY_WEIGHTS, dtype_scale
from .geometry import (  # noqa: F401 - some re-exported
    frame_corners,
    map_points,
    photometric_matrix,
    rescale_transform,
    resize_matrix,
    translation_matrix,
    working_size,
)
from .model import MODES, FrameAlignment, StackAlignment, check_mode, identity_alignment, pick_reference  # noqa: F401
from .valid_box import valid_box  # noqa: F401 - re-exported
from .warp import (  # noqa: F401 - re-exported: focusfuse.align.estimate keeps offering them
    REMAP_BAND,
    REMAP_STEPS,
    crop_to_box,
    resample,
    source_coordinates,
    warp_frame,
)


# Plausibility limits for one neighbour step (frame i against the previous aligned frame).
MIN_STEP_SCALE = 0.8
MAX_STEP_SCALE = 1.25
MAX_STEP_ROTATION_DEG = 10.0
MAX_STEP_SHIFT_FRACTION = 0.25
MAX_STEP_ANISOTROPY = 1.08  # ratio of the affine part's singular values (shear / uneven scaling)
MAX_STEP_PERSPECTIVE = 0.05  # largest change of the homogeneous w over the frame
MIN_ECC_CORRELATION = 0.7  # ECC correlation of the band-passed neighbours below this: no match
MIN_GAIN, MAX_GAIN = 0.5, 2.0  # plausible exposure ratio between neighbours

# Recovery of frames whose neighbour step failed (see :func:`recover_failed`).
SIGNATURE_CELLS = 16  # focus signature grid: cells along the long side (16x12 for 4:3 frames)
RECOVERY_CANDIDATES = 3  # partners tried per failed frame, most similar focus first

# Near-identity results are snapped to the exact identity, so that warp_frame leaves them untouched.
SNAP_SHIFT_PX = 0.05  # largest corner/centre displacement (full resolution)
SNAP_GAIN = 0.002  # largest |gain - 1|
SNAP_OFFSET = 0.001  # largest |offset| (0..1 scale)


@dataclass
class _Reduced:
    """One frame at working resolution: band-passed detail (for geometry) and a low-pass (for exposure)."""

    index: int
    detail: np.ndarray
    smooth: np.ndarray
    signature: np.ndarray  # see focus_signature


@dataclass
class _Link:
    """One frame's step to the frame it was compared with (``parent``; None for the chain's root)."""

    parent: int | None
    step: np.ndarray  # 3x3 at working resolution: this frame's coordinates -> parent's
    photometric: np.ndarray  # 2x2 acting on (value, 1): this frame's values -> parent's
    ok: bool = True
    message: str = ""
    tried: tuple[int, ...] = ()  # frames a failed frame was already compared with
    note: str = ""


@dataclass
class _Chain:
    """Links so far, plus the few working-resolution frames later frames are compared with."""

    links: list[_Link] = field(default_factory=list)
    recent: list[_Reduced] = field(default_factory=list)  # last two aligned frames, newest last
    pending: _Reduced | None = None  # the last frame that failed, if no frame aligned since
    orphans: list[int] = field(default_factory=list)  # unusable frames before the first usable one
    signatures: list[np.ndarray | None] = field(default_factory=list)  # per frame; None when unusable


# --------------------------------------------------------------------------------------------
# Small array helpers


def ecc_motion(mode: str) -> int:
    """The ECC motion model of a mode ("auto" uses affine)."""
    if mode == "translation":
        return cv2.MOTION_TRANSLATION
    if mode == "homography":
        return cv2.MOTION_HOMOGRAPHY
    return cv2.MOTION_AFFINE


def check_frame(image: np.ndarray, index: int) -> np.ndarray:
    """The frame as an array, or ValueError when its layout or pixel type cannot be used."""
    image = np.asarray(image)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(f"frame {index}: unsupported shape {image.shape} (use HxW or HxWx3)")
    if image.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise ValueError(f"frame {index}: unsupported pixel type {image.dtype}")
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise ValueError(f"frame {index}: too small ({image.shape[1]}x{image.shape[0]})")
    return image


def reduced_gray(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-downscaled gray image, float32 on the frame's 0..1 scale (non-finite values kept)."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if (image.shape[1], image.shape[0]) != size:
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    pixels = image.astype(np.float32) / np.float32(dtype_scale(image.dtype))
    if pixels.ndim == 2:
        return pixels
    weights = np.asarray(GRAY_WEIGHTS, dtype=np.float32)
    return pixels[:, :, :3] @ weights


def coarse_sigma(shape: tuple[int, int]) -> float:
    """Sigma of the band-pass's low cut: 1/128 of the long side, at least 4 px."""
    return max(4.0, max(shape) / 128.0)


def detail_image(gray: np.ndarray) -> np.ndarray:
    """Band-pass (difference of Gaussians), scaled to unit RMS: the image ECC and phase correlation see.

    The fine Gaussian (1 px) drops noise and the finest detail, which only in-focus areas have; the
    coarse one (1/128 of the long side) drops illumination gradients, vignetting and the broad glow
    of defocused highlights. What is left is the mid-frequency structure that neighbouring frames of
    a bracket share even where one is sharper than the other.
    """
    band = cv2.GaussianBlur(gray, (0, 0), 1.0) - cv2.GaussianBlur(gray, (0, 0), coarse_sigma(gray.shape))
    rms = float(np.sqrt(np.mean(band.astype(np.float64) ** 2)))
    return (band / rms).astype(np.float32) if rms > 0 else band


def smooth_image(gray: np.ndarray) -> np.ndarray:
    """Heavy low-pass (sigma 1/64 of the long side): local brightness without focus-dependent detail."""
    return cv2.GaussianBlur(gray, (0, 0), max(2.0, max(gray.shape) / 64.0))


def has_texture(gray: np.ndarray) -> bool:
    """False for (nearly) constant frames, which carry no alignment information."""
    return float(np.std(gray)) > 1e-3


def signature_grid(shape: tuple[int, int]) -> tuple[int, int]:
    """(columns, rows) of the focus signature: SIGNATURE_CELLS along the long side, square-ish cells."""
    height, width = shape
    long_side = max(height, width)
    columns = min(width, max(1, round(SIGNATURE_CELLS * width / long_side)))
    rows = min(height, max(1, round(SIGNATURE_CELLS * height / long_side)))
    return columns, rows


def focus_signature(gray: np.ndarray) -> np.ndarray:
    """Where the frame is sharp: log fine-detail energy per grid cell, minus its mean over the cells.

    Fine detail (the gray image minus its 1 px blur) is what defocus removes first. The log turns
    the comparison into one of ratios, a floor at 1e-4 of the mean energy keeps flat cells from
    dominating, and removing the mean drops exposure and overall contrast. Frames focused at the
    same depth get close signatures (Euclidean distance) even when they sit far apart in the
    bracket. A few hundred float32 values per frame (16x12 for 4:3 frames).
    """
    fine = gray - cv2.GaussianBlur(gray, (0, 0), 1.0)
    energy = cv2.resize(fine * fine, signature_grid(gray.shape), interpolation=cv2.INTER_AREA).astype(np.float64)
    logs = np.log(energy + 1e-4 * float(energy.mean()) + 1e-20)
    return (logs - logs.mean()).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Neighbour step: phase correlation, ECC, plausibility, exposure


def coarse_shift(anchor: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """3x3 translation from ``frame`` coordinates to ``anchor`` coordinates by phase correlation.

    Falls back to identity when the peak is weak or implausibly far.
    """
    height, width = frame.shape
    window = cv2.createHanningWindow((width, height), cv2.CV_32F)
    # Copies: some OpenCV builds (seen in 5.0.0) apply the window to the inputs in place.
    (dx, dy), response = cv2.phaseCorrelate(anchor.copy(), frame.copy(), window)
    # phaseCorrelate gives t with frame(x) = anchor(x - t), so frame point x sits at x - t in anchor.
    too_far = abs(dx) > MAX_STEP_SHIFT_FRACTION * width or abs(dy) > MAX_STEP_SHIFT_FRACTION * height
    if not np.isfinite([dx, dy]).all() or too_far or response < 0.01:
        return np.eye(3)
    return translation_matrix(-dx, -dy)


def pyramid_levels(shape: tuple[int, int]) -> int:
    """Number of halvings for the coarse-to-fine ECC: the coarsest level keeps >= 160 px on its long side."""
    levels = 0
    while max(shape) / 2 ** (levels + 1) >= 160 and levels < 3:
        levels += 1
    return levels


def pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """``image`` and its area-downscaled halvings, finest first (``levels`` + 1 images)."""
    images = [image]
    for _ in range(levels):
        smaller = images[-1]
        size = (max(1, smaller.shape[1] // 2), max(1, smaller.shape[0] // 2))
        images.append(cv2.resize(smaller, size, interpolation=cv2.INTER_AREA))
    return images


def border_margin(shape: tuple[int, int]) -> int:
    """Pixels at the border whose band-pass values depend on the border handling (3 coarse sigmas)."""
    return min(math.ceil(3 * coarse_sigma(shape)), min(shape) // 8)


def ecc_at_level(
    frame: np.ndarray, anchor: np.ndarray, warp: np.ndarray, motion: int, margin: int, fine: bool
) -> tuple[np.ndarray, float]:
    """One ECC run: ``warp`` (3x3, frame -> anchor coordinates) refined, and the final correlation.

    A border of ``margin`` px is left out of both images: band-passing makes it depend on where
    the frame edge cuts the scene, a fixed pattern that would pull the estimate towards identity.
    """
    height, width = frame.shape
    template = np.ascontiguousarray(frame[margin : height - margin, margin : width - margin])
    anchor_mask = np.zeros(anchor.shape, np.uint8)
    anchor_mask[margin : anchor.shape[0] - margin, margin : anchor.shape[1] - margin] = 255
    start = warp @ translation_matrix(margin, margin)
    start = start.astype(np.float32) if motion == cv2.MOTION_HOMOGRAPHY else start[:2].astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30 if fine else 100, 1e-6 if fine else 1e-5)
    correlation, refined = cv2.findTransformECC(template, anchor, start, motion, criteria, anchor_mask, 1)
    result = np.eye(3)
    result[: refined.shape[0]] = refined
    result = result @ translation_matrix(-margin, -margin)
    return result / result[2, 2], float(correlation)


def ecc_coarse_to_fine(
    frame: np.ndarray, anchor: np.ndarray, start: np.ndarray, motion: int
) -> tuple[np.ndarray, float]:
    """ECC from the coarsest pyramid level to the working resolution; raises cv2.error on failure.

    A failure at a coarse level keeps the estimate so far; only the last level's failure counts.
    """
    levels = pyramid_levels(frame.shape)
    frames, anchors = pyramid(frame, levels), pyramid(anchor, levels)
    margin = border_margin(frame.shape)
    warp, correlation = start, 0.0
    for level in range(levels, -1, -1):
        small = frames[level]
        scale_x, scale_y = small.shape[1] / frame.shape[1], small.shape[0] / frame.shape[0]
        to_level = resize_matrix(scale_x, scale_y)
        warp_level = to_level @ warp @ np.linalg.inv(to_level)
        level_margin = math.ceil(margin * max(scale_x, scale_y))
        try:
            refined, correlation = ecc_at_level(
                small, anchors[level], warp_level, motion, level_margin, fine=level == 0
            )
        except cv2.error:
            if level == 0:
                raise
            continue
        warp = rescale_transform(refined, to_level)
    return warp, correlation


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


def overlap_mask(step: np.ndarray, shape: tuple[int, int], margin: int) -> np.ndarray:
    """Anchor pixels covered by the warped frame, ``margin`` px away from either image's border."""
    height, width = shape
    inner = np.zeros(shape, np.uint8)
    inner[margin : height - margin, margin : width - margin] = 1
    covered = cv2.warpPerspective(inner, step, (width, height), flags=cv2.INTER_NEAREST)
    return (covered > 0) & (inner > 0)


def exposure_match(anchor_smooth: np.ndarray, frame_smooth: np.ndarray, step: np.ndarray) -> tuple[float, float]:
    """Gain and offset with ``anchor ~ gain * frame + offset``, from heavily blurred images over the overlap.

    Defocus moves contrast between nearby pixels but hardly changes local means, so heavily blurred
    images of neighbours differ mainly by the exposure change. Where the blurred images still carry
    clear structure (correlation >= 0.9, visible spread) gain and offset come from their means and
    standard deviations (a symmetric fit, not biased like least squares); otherwise only a gain is
    fitted, from the means. Nearly black or white pixels (clipping) are left out.
    """
    height, width = anchor_smooth.shape
    margin = max(2, round(max(height, width) / 32))
    warped = cv2.warpPerspective(frame_smooth, step, (width, height), flags=cv2.INTER_LINEAR)
    mask = overlap_mask(step, anchor_smooth.shape, margin)
    mask &= (anchor_smooth > 0.02) & (anchor_smooth < 0.98) & (warped > 0.02) & (warped < 0.98)
    if mask.sum() < 0.01 * mask.size:
        return 1.0, 0.0
    anchor_values = anchor_smooth[mask].astype(np.float64)
    frame_values = warped[mask].astype(np.float64)
    anchor_mean, frame_mean = anchor_values.mean(), frame_values.mean()
    anchor_std, frame_std = anchor_values.std(), frame_values.std()
    structured = anchor_std > 0.01 and frame_std > 0.01
    if structured and np.corrcoef(anchor_values, frame_values)[0, 1] >= 0.9:
        gain = anchor_std / frame_std
        return float(gain), float(anchor_mean - gain * frame_mean)
    return float(anchor_mean / max(frame_mean, 1e-6)), 0.0


def neighbour_step(anchor: _Reduced, frame: _Reduced, motion: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Step (3x3, frame -> anchor, working resolution), exposure (2x2) and "" or a failure reason."""
    identity = np.eye(3)
    starts = [coarse_shift(anchor.detail, frame.detail)]
    if not np.allclose(starts[0], identity):
        starts.append(identity)  # second chance when the phase correlation peak misled ECC
    reason = ""
    for start in starts:
        try:
            step, correlation = ecc_coarse_to_fine(frame.detail, anchor.detail, start, motion)
        except cv2.error:
            reason = reason or "ECC did not converge"
            continue
        reason = implausibility(step, frame.detail.shape)
        if not reason and correlation < MIN_ECC_CORRELATION:
            reason = f"no match (ECC correlation {correlation:.2f})"
        if not reason:
            break
    if reason:
        return identity, np.eye(2), reason
    gain, offset = exposure_match(anchor.smooth, frame.smooth, step)
    if not (np.isfinite([gain, offset]).all() and MIN_GAIN <= gain <= MAX_GAIN):
        return identity, np.eye(2), f"implausible exposure change (gain {gain:.2f})"
    return step, photometric_matrix(gain, offset), ""


# --------------------------------------------------------------------------------------------
# The streaming pass and the chain


def reduce_frame(image: np.ndarray, index: int, size: tuple[int, int]) -> _Reduced | str:
    """The frame's working-resolution images, or a reason why it cannot be used for alignment."""
    gray = reduced_gray(image, size)
    if not np.isfinite(gray).all():
        return "contains NaN/inf pixels"
    if not has_texture(gray):
        return "no texture (constant image)"
    return _Reduced(index, detail_image(gray), smooth_image(gray), focus_signature(gray))


def link_frame(chain: _Chain, frame: _Reduced, motion: int) -> None:
    """Compare the frame with the chain's recent frames, append its link and update the chain.

    Tried in turn: the last aligned frame; the one aligned before it (skips one odd frame, e.g. a
    frame out of focus order); the last frame that failed (a match there means the chain jumped
    between them and goes on from there; when the chain's very first frame is the one nothing
    matches, it is blamed instead of its successor). When all fail, the frame keeps its nearest
    aligned neighbour's transform and becomes the frame that failed last.
    """
    candidates = list(reversed(chain.recent)) + ([chain.pending] if chain.pending is not None else [])
    first_reason = ""
    for candidate in candidates:
        step, photometric, reason = neighbour_step(candidate, frame, motion)
        if not reason:
            chain.links.append(_Link(candidate.index, step, photometric))
            newest = chain.recent[-1].index
            if candidate is chain.pending and is_lonely_root(chain.links, newest):
                blame_root(chain.links, newest, candidate.index)
            chain.recent = [candidate, frame]  # a skipped frame keeps its own earlier alignment
            chain.pending = None
            return
        first_reason = first_reason or reason
    parent = chain.recent[-1].index
    tried = tuple(candidate.index for candidate in candidates)
    chain.links.append(_Link(parent, np.eye(3), np.eye(2), False, f"frame {frame.index}: {first_reason}", tried))
    chain.pending = frame


def add_frame(chain: _Chain, index: int, reduced: _Reduced | str, motion: int) -> None:
    """Append one frame (or the reason it is unusable) and its focus signature to the chain."""
    chain.signatures.append(None if isinstance(reduced, str) else reduced.signature)
    if isinstance(reduced, str):
        parent = chain.recent[-1].index if chain.recent else None
        chain.links.append(_Link(parent, np.eye(3), np.eye(2), False, f"frame {index}: {reduced}"))
        if parent is None:
            chain.orphans.append(index)
    elif not chain.recent:
        chain.links.append(_Link(None, np.eye(3), np.eye(2)))
        for orphan in chain.orphans:
            chain.links[orphan].parent = index  # unusable frames before the first usable one
        chain.recent = [reduced]
    else:
        link_frame(chain, reduced, motion)


# --------------------------------------------------------------------------------------------
# Recovery: failed frames aligned to a similar-focus partner


def anchored_frames(links: list[_Link]) -> list[bool]:
    """Per frame: True when its link and every link on its way to the chain's root aligned (ok)."""
    state: list[bool | None] = [None] * len(links)
    for start in range(len(links)):
        path, index = [], start
        while index is not None and state[index] is None:
            path.append(index)
            index = links[index].parent
        value = True if index is None else bool(state[index])
        for item in reversed(path):
            value = value and links[item].ok
            state[item] = value
    return [bool(value) for value in state]


def chained_through(links: list[_Link], index: int) -> set[int]:
    """Frames whose way to the chain's root passes through frame ``index`` (``index`` included)."""
    children: dict[int, list[int]] = {}
    for other, link in enumerate(links):
        if link.parent is not None:
            children.setdefault(link.parent, []).append(other)
    result, queue = {index}, [index]
    while queue:
        for child in children.get(queue.pop(), []):
            if child not in result:
                result.add(child)
                queue.append(child)
    return result


def partner_candidates(signatures: list[np.ndarray | None], links: list[_Link], index: int) -> list[int]:
    """Up to RECOVERY_CANDIDATES frames for failed frame ``index`` to align to, most similar focus first.

    Left out: unusable frames (no signature), the frames it was already compared with, and frames
    chained through it (after a jump in the chain), which can never anchor it.
    """
    own = signatures[index]
    if own is None:
        return []
    excluded = chained_through(links, index) | set(links[index].tried)
    scored = sorted(
        (float(np.linalg.norm(signature - own)), other)
        for other, signature in enumerate(signatures)
        if signature is not None and other not in excluded
    )
    return [other for _, other in scored[:RECOVERY_CANDIDATES]]


def reread_frame(frames: Sequence, index: int, shape: tuple[int, int], size: tuple[int, int]) -> _Reduced | str:
    """Frame ``index`` read again and reduced, or the reason it cannot be used."""
    image = check_frame(frames[index], index)
    if image.shape[:2] != shape:
        return "size changed when read again"
    return reduce_frame(image, index, size)


def partner_link(index: int, failed: _Link, partner: int, step: np.ndarray, photometric: np.ndarray) -> _Link:
    """The aligned link that replaces frame ``index``'s failed one, with a note on how it was found."""
    reason = failed.message.split(": ", 1)[-1]
    note = f"frame {index}: aligned via frame {partner} (neighbour step: {reason})"
    return _Link(partner, step, photometric, note=note)


def try_partners(
    links: list[_Link], index: int, partners: list[int], frames: Sequence,
    shape: tuple[int, int], size: tuple[int, int], motion: int,
) -> bool:
    """Align frame ``index`` to the first of ``partners`` that passes every check; True when one did."""
    if not partners:
        return False
    frame = reread_frame(frames, index, shape, size)
    if isinstance(frame, str):
        return False
    for partner_index in partners:
        partner = reread_frame(frames, partner_index, shape, size)
        if isinstance(partner, str):
            continue
        step, photometric, reason = neighbour_step(partner, frame, motion)
        if not reason:
            links[index] = partner_link(index, links[index], partner_index, step, photometric)
            return True
    return False


def recover_failed(
    links: list[_Link], signatures: list[np.ndarray | None], frames: Sequence,
    shape: tuple[int, int], size: tuple[int, int], motion: int,
) -> None:
    """Align each failed (but usable) frame to a similar-focus partner and chain it through that partner.

    A failed frame's candidates are its RECOVERY_CANDIDATES most similar focus signatures (see
    :func:`partner_candidates`); one is tried once it is anchored (it and its whole way to the root
    aligned), so no frame is chained through itself. A recovery can anchor further frames (those
    that had matched the recovered frame), so passes repeat until one recovers nothing; each pair
    is tried at most once. Frames chained to a recovered frame, and failed frames that copy its
    transform, follow it automatically when the chain is composed. Frames left failed keep their
    link, with the partners tried added to the message.
    """
    remaining = {index: partner_candidates(signatures, links, index)
                 for index, link in enumerate(links) if not link.ok and signatures[index] is not None}
    attempted: dict[int, list[int]] = {index: [] for index in remaining}
    recovered = True
    while recovered:
        recovered = False
        for index in remaining:
            if links[index].ok:
                continue
            anchored = anchored_frames(links)
            ready = [other for other in remaining[index] if anchored[other]]
            remaining[index] = [other for other in remaining[index] if not anchored[other]]
            attempted[index] += ready
            recovered = try_partners(links, index, ready, frames, shape, size, motion) or recovered
    for index, partners in attempted.items():
        if partners and not links[index].ok:
            tried = ", ".join(str(partner) for partner in partners)
            links[index].message += f"; no similar-focus frame matched either (tried {tried})"


def is_lonely_root(links: list[_Link], root: int) -> bool:
    """True when ``root`` starts the chain and no frame aligned to it."""
    return links[root].parent is None and not any(link.parent == root and link.ok for link in links)


def blame_root(links: list[_Link], root: int, successor: int) -> None:
    """Make ``successor`` the chain's root and mark the old root as the frame that failed."""
    message = links[successor].message.replace(f"frame {successor}:", f"frame {root}:", 1)
    links[successor] = _Link(None, np.eye(3), np.eye(2))
    links[root] = _Link(successor, np.eye(3), np.eye(2), False, message or f"frame {root}: no match", (successor,))


def chain_to_root(links: list[_Link]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per frame: geometry (3x3) and exposure (2x2) composed along the links up to the chain's root."""
    geometry: list[np.ndarray | None] = [None] * len(links)
    exposure: list[np.ndarray | None] = [None] * len(links)

    def resolve(index: int) -> None:
        path = []
        while index is not None and geometry[index] is None:
            path.append(index)
            index = links[index].parent
        for item in reversed(path):
            parent = links[item].parent
            parent_geometry = np.eye(3) if parent is None else geometry[parent]
            parent_exposure = np.eye(2) if parent is None else exposure[parent]
            geometry[item] = parent_geometry @ links[item].step
            exposure[item] = parent_exposure @ links[item].photometric

    for index in range(len(links)):
        resolve(index)
    return geometry, exposure  # type: ignore[return-value]


def frame_alignments(links: list[_Link], reference: int, to_small: np.ndarray) -> list[FrameAlignment]:
    """Chain the links to ``reference`` and express the transforms at full resolution."""
    geometry, exposure = chain_to_root(links)
    reference_geometry = np.linalg.inv(geometry[reference])
    reference_exposure = np.linalg.inv(exposure[reference])
    result = []
    for link, frame_geometry, frame_exposure in zip(links, geometry, exposure):
        transform = rescale_transform(reference_geometry @ frame_geometry, to_small)
        photometric = reference_exposure @ frame_exposure
        result.append(FrameAlignment(
            transform, float(photometric[0, 0]), float(photometric[0, 1]), link.ok, link.message, link.note
        ))
    return result


def snap_to_identity(frame: FrameAlignment, shape: tuple[int, int]) -> FrameAlignment:
    """The alignment with a near-identity geometry and/or exposure replaced by the exact identity.

    Geometry: no frame corner nor the centre moves by more than SNAP_SHIFT_PX (full resolution).
    Exposure: |gain - 1| <= SNAP_GAIN and |offset| <= SNAP_OFFSET. The two are snapped separately;
    when both are, :func:`warp_frame` returns the frame itself (no resampling).
    """
    height, width = shape
    points = np.vstack([frame_corners(shape), [[(width - 1) / 2.0, (height - 1) / 2.0]]])
    moved = np.linalg.norm(map_points(frame.transform, points) - points, axis=1)
    transform = np.eye(3) if bool(np.all(moved <= SNAP_SHIFT_PX)) else frame.transform
    same_exposure = abs(frame.gain - 1.0) <= SNAP_GAIN and abs(frame.offset) <= SNAP_OFFSET
    gain, offset = (1.0, 0.0) if same_exposure else (frame.gain, frame.offset)
    return replace(frame, transform=transform, gain=gain, offset=offset)


def is_indexable(frames: Iterable[np.ndarray] | Sequence) -> bool:
    """True for inputs that can be read again by index (sequences, arrays), False for one-shot iterators."""
    return isinstance(frames, Sequence) or (isinstance(frames, Sized) and hasattr(frames, "__getitem__"))


def count_without_reading(frames: Iterable[np.ndarray] | Sequence) -> tuple[int, tuple[int, int]]:
    """Number of frames and the first frame's (H, W), reading only the first frame of a sequence."""
    if is_indexable(frames):
        if len(frames) == 0:
            raise ValueError("no frames to align")
        return len(frames), check_frame(frames[0], 0).shape[:2]
    shape: tuple[int, int] | None = None
    count = 0
    for image in frames:
        if shape is None:
            shape = check_frame(image, 0).shape[:2]
        count += 1
    if shape is None:
        raise ValueError("no frames to align")
    return count, shape


def estimate_alignment(
    frames: Iterable[np.ndarray] | Sequence,
    *,
    mode: str = "auto",
    reference: int | None = None,
    max_size: int = 1024,
    progress: Callable[[int, int], None] | None = None,
) -> StackAlignment:
    """Estimate how every frame maps onto the reference frame (default: the middle one, N // 2).

    ``frames`` is iterated once, one frame at a time (HxW or HxWx3; uint8, uint16 or float in 0..1);
    only the working-resolution images of the last two aligned frames and of the last failed one,
    plus a focus signature of a few hundred floats per frame (:func:`focus_signature`), are kept, so
    memory hardly grows with the stack. Estimation runs on area-downscaled gray images (long side
    <= ``max_size``); transforms are returned at full resolution.

    Each frame is aligned to its neighbour (the previous frame that aligned; if that fails, the one
    before it, so one odd frame, e.g. out of focus order, does not break the chain) and the steps are
    composed along the chain to the reference. Geometry is estimated on band-passed images (see
    :func:`detail_image`), exposure on heavily blurred ones (see :func:`exposure_match`).

    When ``frames`` can be indexed (a sequence or array), frames whose neighbour step failed are
    then read again and aligned to the aligned frame of most similar focus, up to
    RECOVERY_CANDIDATES tries (see :func:`recover_failed`): a frame out of focus order is aligned to
    the frames it really neighbours in focus. Such a frame is ``ok`` and says so in ``note``. A
    one-shot iterator cannot be read again: there, failed frames stay failed.

    Finally a geometry or exposure within SNAP_SHIFT_PX / SNAP_GAIN / SNAP_OFFSET of the identity
    is set to exactly the identity (:func:`snap_to_identity`), so that already aligned frames are
    not resampled. Modes:

    * ``"auto"``: phase correlation for the coarse shift, then coarse-to-fine ECC with an affine
      model. Affine is the smallest ECC model that contains a scale change: lens breathing is a
      magnification about the optical axis (scale + shift), rails and hands add shift and a little
      rotation, and a slightly tilted sensor or rail adds mild shear. A homography's two extra
      perspective terms are weakly constrained in defocused, low-texture frames and grow into corner
      errors when 50+ steps are chained, so ``"homography"`` is left for scenes that need it.
    * ``"translation"``, ``"affine"``, ``"homography"``: the same with that ECC model.
    * ``"none"``: identity transforms and unit gain; a sequence (anything with ``len`` and indexing)
      is not read beyond its first frame, which gives the size.

    A frame that cannot be aligned (NaN/inf, no texture, ECC failure, low correlation, implausible
    step or exposure change) gets ``ok=False`` and a message; it never raises. ``progress(done,
    total)`` is called after each frame (total is 0 when ``frames`` has no length). Raises ValueError
    for an unknown mode, no frames, a bad reference index, or frames of differing size or of an
    unusable layout or pixel type. A sequence is read once, plus the re-reads of failed frames and of
    the partners tried for them (none when no frame fails).
    """
    check_mode(mode)
    if max_size < 32:
        raise ValueError(f"max_size must be at least 32, got {max_size}")
    if reference is not None and isinstance(frames, Sized):
        pick_reference(reference, len(frames))
    if mode == "none":
        count, shape = count_without_reading(frames)
        return identity_alignment(count, shape, pick_reference(reference, count))

    total = len(frames) if isinstance(frames, Sized) else 0
    motion = ecc_motion(mode)
    chain = _Chain()
    shape: tuple[int, int] | None = None
    size = (0, 0)
    for index, image in enumerate(frames):
        image = check_frame(image, index)
        if shape is None:
            shape = image.shape[:2]
            size = working_size(shape, max_size)
        elif image.shape[:2] != shape:
            raise ValueError(f"frame {index}: size {image.shape[1]}x{image.shape[0]} differs from frame 0's "
                             f"{shape[1]}x{shape[0]}")
        add_frame(chain, index, reduce_frame(image, index, size), motion)
        del image
        if progress is not None:
            progress(index + 1, total)

    if shape is None:
        raise ValueError("no frames to align")
    if is_indexable(frames):
        recover_failed(chain.links, chain.signatures, frames, shape, size, motion)
    chosen = pick_reference(reference, len(chain.links))
    to_small = resize_matrix(size[0] / shape[1], size[1] / shape[0])
    aligned = frame_alignments(chain.links, chosen, to_small)
    return StackAlignment(chosen, [snap_to_identity(frame, shape) for frame in aligned], shape)
