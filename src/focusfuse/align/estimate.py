"""Aligning a focus bracket: geometry (lens breathing, shifts, rotation) and exposure drift.

Estimation (:func:`estimate_alignment`, a wrapper over :class:`AlignmentEstimator`) reduces each
frame to a small gray image, compares it with its neighbour (the previous frame that aligned), and
keeps only 3x3 transforms and gain/offset pairs. Neighbours differ little in focus, so they look
alike even when the two ends of the bracket do not; the neighbour steps are then chained (composed)
to the reference frame. A frame whose neighbour step fails (e.g. one out of focus order) is read
again afterwards and aligned to the frame of most similar focus, found by a small per-frame focus
signature.

The fusion pass reads each frame again and calls :func:`warp_frame` with that frame's
:class:`FrameAlignment`; :meth:`StackAlignment.valid_box` and :func:`crop_to_box` cut away the
border that is not covered by every frame.

Coordinates are pixel centres: pixel (x, y) is at column x, row y; transforms are 3x3 float64
matrices acting on (x, y, 1) at full resolution.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence, Sized

import numpy as np

from .chain import (
    RECOVERY_CANDIDATES,
    SNAP_GAIN,
    SNAP_OFFSET,
    SNAP_SHIFT_PX,
    _Chain,
    _Link,
    add_frame,
    add_unusable,
    anchored_frames,
    chain_to_root,
    frame_alignments,
    partner_candidates,
    recover_failed,
    snap_to_identity,
)
from .geometry import frame_corners, map_points, rescale_transform, resize_matrix, translation_matrix, working_size
from .model import MODES, FrameAlignment, StackAlignment, check_mode, identity_alignment, pick_reference
from .reduce import Reduced, check_frame, detail_image, focus_signature, reduce_frame, smooth_image
from .steps import Step, ecc_motion, exposure_match, implausibility, neighbour_step
from .valid_box import valid_box
from .warp import crop_to_box, source_coordinates, warp_frame

__all__ = [
    "MODES", "RECOVERY_CANDIDATES", "SNAP_GAIN", "SNAP_OFFSET", "SNAP_SHIFT_PX",
    "FrameAlignment", "StackAlignment", "_Chain", "_Link", "anchored_frames", "chain_to_root", "check_frame",
    "check_mode", "crop_to_box", "detail_image", "ecc_motion", "estimate_alignment", "exposure_match",
    "focus_signature", "frame_alignments", "frame_corners", "identity_alignment", "implausibility", "map_points",
    "neighbour_step", "partner_candidates", "pick_reference", "reduce_frame", "rescale_transform", "resize_matrix",
    "smooth_image", "snap_to_identity", "source_coordinates", "translation_matrix", "valid_box", "warp_frame",
    "working_size",
]


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
    held: dict[int, Reduced | str] = {}  # the frames later frames may still be compared with
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
        held[index] = reduce_frame(image, index, size)
        del image
        link_next(chain, held, index, motion)
        if progress is not None:
            progress(index + 1, total)

    if shape is None:
        raise ValueError("no frames to align")
    if is_indexable(frames):
        recover_failed(chain.links, chain.signatures, lambda index: reread_frame(frames, index, shape, size), motion)
    chosen = pick_reference(reference, len(chain.links))
    to_small = resize_matrix(size[0] / shape[1], size[1] / shape[0])
    aligned = frame_alignments(chain.links, chosen, to_small)
    return StackAlignment(chosen, [snap_to_identity(frame, shape) for frame in aligned], shape)


def link_next(chain: _Chain, held: dict[int, Reduced | str], index: int, motion: int) -> None:
    """Append frame ``index`` to the chain, computing the steps it needs; forget frames no longer needed."""
    frame = held[index]
    if isinstance(frame, str):
        add_unusable(chain, index, frame)
    else:
        steps: dict[int, Step] = {}

        def step_from(anchor: int) -> Step:
            if anchor not in steps:
                steps[anchor] = neighbour_step(held[anchor], frame, motion)  # type: ignore[arg-type]
            return steps[anchor]

        add_frame(chain, index, frame.signature, step_from)
    needed = chain.needed()
    for other in [other for other in held if other not in needed]:
        del held[other]


def reread_frame(frames: Sequence, index: int, shape: tuple[int, int], size: tuple[int, int]) -> Reduced | str:
    """Frame ``index`` read again and reduced, or the reason it cannot be used."""
    image = check_frame(frames[index], index)
    if image.shape[:2] != shape:
        return "size changed when read again"
    return reduce_frame(image, index, size)
