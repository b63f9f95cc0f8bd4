"""Aligning a focus bracket: geometry (lens breathing, shifts, rotation) and exposure drift.

Estimation (:func:`estimate_alignment`, a wrapper over :class:`AlignmentEstimator`) reduces each
frame to a small gray image, compares it with its neighbour (the previous frame that aligned), and
keeps only 3x3 transforms and gain/offset pairs. Neighbours differ little in focus, so they look
alike even when the two ends of the bracket do not; the neighbour steps are then chained (composed)
to the reference frame. A frame whose neighbour step fails (e.g. one out of focus order) is read
again afterwards and aligned to the frame of most similar focus, found by a small per-frame focus
signature.

The fusion pass warps each frame with :func:`warp_frame` and that frame's :class:`FrameAlignment`; with
cropping, :meth:`StackAlignment.valid_box` gives the area covered by every frame, and the engine reads only
that window (``engine.alignment.crop_window``).

Coordinates are pixel centres: pixel (x, y) is at column x, row y; transforms are 3x3 float64
matrices acting on (x, y, 1) at full resolution.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Sequence, Sized
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from .chain import (
    SNAP_SHIFT_PX,
    _Link,
    anchored_frames,
    frame_alignments,
    partner_candidates,
    snap_to_identity,
)
from .estimator import AlignmentEstimator
from .geometry import resize_matrix
from .model import MODES, FrameAlignment, StackAlignment, check_mode, identity_alignment, pick_reference
from .reduce import check_frame, detail_image, focus_signature
from .valid_box import valid_box
from .warp import crop_to_box, source_coordinates, warp_frame

__all__ = [
    "estimate_on_pool", "MODES", "SNAP_SHIFT_PX", "AlignmentEstimator", "FrameAlignment", "StackAlignment", "_Link",
    "anchored_frames", "check_frame", "check_mode", "crop_to_box", "detail_image", "estimate_alignment",
    "focus_signature", "frame_alignments", "identity_alignment", "partner_candidates", "pick_reference",
    "resize_matrix", "snap_to_identity", "source_coordinates", "valid_box", "warp_frame",
]

MAX_DEFAULT_WORKERS = 4
FRAMES_AHEAD_PER_WORKER = 2  # frames read ahead of the chain, per worker thread (bounds memory)


def default_workers() -> int:
    """Threads for estimation when none are given: min(4, CPU count)."""
    return max(1, min(MAX_DEFAULT_WORKERS, os.cpu_count() or 1))


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
    workers: int | None = None,
) -> StackAlignment:
    """Estimate how every frame maps onto the reference frame (default: the middle one, N // 2).

    ``frames`` (HxW or HxWx3; uint8, uint16 or float in 0..1) are handed to an
    :class:`AlignmentEstimator`; only the working-resolution images of the few frames the chain
    still needs, plus a focus signature of a few hundred floats per frame (:func:`focus_signature`),
    are kept, so memory hardly grows with the stack. Estimation runs on area-downscaled gray images
    (long side <= ``max_size``); transforms are returned at full resolution. A sequence is read,
    reduced and compared by ``workers`` threads (default min(4, CPU count); 1: all in this thread,
    in order), a few frames ahead of the chain; a one-shot iterator is worked through in this thread.
    The result does not depend on the number of threads.

    Each frame is aligned to its neighbour (the previous frame that aligned; if that fails, the one
    before it, so one odd frame, e.g. out of focus order, does not break the chain) and the steps are
    composed along the chain to the reference. Geometry is estimated on band-passed images (see
    :func:`detail_image`), exposure on heavily blurred ones (see :func:`exposure_match`).

    When ``frames`` can be indexed (a sequence or array), frames whose neighbour step failed are
    then read again and aligned to the aligned frame of most similar focus, up to
    RECOVERY_CANDIDATES tries (see :func:`.chain.recover_failed`): a frame out of focus order is aligned to
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
    total)`` is called in this thread as frames are linked, in order (total is 0 when ``frames``
    has no length). Raises ValueError for an unknown mode, no frames, a bad reference index, or
    frames of differing size or of an unusable layout or pixel type. A sequence is read once, plus
    the re-reads of failed frames and of the partners tried for them (none when no frame fails).
    """
    check_mode(mode)
    if max_size < 32:
        raise ValueError(f"max_size must be at least 32, got {max_size}")
    if reference is not None and isinstance(frames, Sized):
        pick_reference(reference, len(frames))
    if mode == "none":
        count, shape = count_without_reading(frames)
        return identity_alignment(count, shape, pick_reference(reference, count))
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    options = {"mode": mode, "reference": reference, "max_size": max_size}
    if is_indexable(frames):
        return estimate_sequence(frames, options, progress, workers)
    return estimate_iterable(frames, options, progress)


def estimate_sequence(frames: Sequence, options: dict, progress: Callable[[int, int], None] | None,
                      workers: int) -> StackAlignment:
    """:func:`estimate_alignment` for a sequence: frame 0 read here, the others by ``workers`` threads."""
    if workers == 1:
        count = len(frames)
        if count == 0:
            raise ValueError("no frames to align")
        first = check_frame(frames[0], 0)
        estimator = AlignmentEstimator(count, first.shape[:2], **options)
        estimator.add(0, first)
        del first
        report_progress(progress, 0, 1, count)
        for index in range(1, count):
            estimator.add(index, frames[index])
            report_progress(progress, index, index + 1, count)
        return estimator.result(reread=frames.__getitem__)
    with ThreadPoolExecutor(workers, thread_name_prefix="align") as pool:
        return estimate_on_pool(frames, pool, workers * FRAMES_AHEAD_PER_WORKER, progress=progress, **options)


def estimate_on_pool(frames: Sequence, pool: ThreadPoolExecutor, ahead: int, *,
                     progress: Callable[[int, int], None] | None = None, **options: object) -> StackAlignment:
    """:func:`estimate_alignment` for a sequence on a caller's thread pool: frame 0 read here, the others read,
    reduced and compared by the pool, at most ``ahead`` (>= 1) frames past the chain (what bounds memory)."""
    count = len(frames)
    if count == 0:
        raise ValueError("no frames to align")
    first = check_frame(frames[0], 0)
    estimator = AlignmentEstimator(count, first.shape[:2], executor=pool, **options)
    estimator.add(0, first)
    del first
    read_ahead(estimator, frames, pool, max(1, ahead), progress)  # steps still queued end with the pool
    return estimator.result(reread=frames.__getitem__)


def read_ahead(estimator: AlignmentEstimator, frames: Sequence, pool: ThreadPoolExecutor, ahead: int,
               progress: Callable[[int, int], None] | None) -> None:
    """Hand frames 1.. to ``pool`` (read and add), at most ``ahead`` frames past the chain; wait until all are linked.

    Reports progress as the chain links frames. Raises the error of the lowest-numbered frame that
    could not be read or added (after the reads already started have ended).
    """
    count = len(frames)
    loads: list[Future] = []
    reported = 0
    while reported < count:
        while len(loads) + 1 < min(count, reported + ahead):
            loads.append(pool.submit(load_frame, estimator, frames, len(loads) + 1))
        if any(load.done() and load.exception() is not None for load in loads):
            raise first_failure(loads)
        linked = estimator.wait_linked(reported + 1, timeout=0.1)
        report_progress(progress, reported, linked, count)
        reported = max(reported, linked)


def report_progress(progress: Callable[[int, int], None] | None, reported: int, linked: int, total: int) -> None:
    """Call ``progress(done, total)`` for every frame linked since ``reported``."""
    if progress is not None:
        for done in range(reported + 1, linked + 1):
            progress(done, total)


def load_frame(estimator: AlignmentEstimator, frames: Sequence, index: int) -> None:
    """Read frame ``index`` and add it to ``estimator`` (a worker task)."""
    estimator.add(index, frames[index])


def first_failure(loads: list[Future]) -> BaseException:
    """The exception of the lowest-numbered failed load, once all loads started have ended."""
    for load in loads:
        load.cancel()
    for load in loads:
        if not load.cancelled():
            load.exception()  # waits for it to end
    return next(load.exception() for load in loads if not load.cancelled() and load.exception() is not None)


def estimate_iterable(frames: Iterable[np.ndarray], options: dict,
                      progress: Callable[[int, int], None] | None) -> StackAlignment:
    """:func:`estimate_alignment` for a one-shot iterable: everything in this thread, in order.

    The iterator hands frames over one at a time in this thread anyway; working in step with it
    keeps only the working-resolution images of the last three frames.
    """
    iterator = iter(frames)
    first = next(iterator, None)
    if first is None:
        raise ValueError("no frames to align")
    estimator = AlignmentEstimator._open_ended(check_frame(first, 0).shape[:2], **options)
    images = itertools.chain([first], iterator)
    del first
    count = 0
    for index, image in enumerate(images):
        estimator.add(index, image)
        del image
        count = index + 1
        if progress is not None:
            progress(count, 0)
    estimator._close(count)
    return estimator.result()
